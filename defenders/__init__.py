"""Built-in defense strategies: one module each. Importing this package registers them."""

from arena.defenders import (  # noqa: F401
    abs,
    anp,
    bti_dbf,
    clp,
    deep_inspect,
    feature_squeezing,
    fine_pruning,
    fine_tuning,
    ft_sam,
    i_bau,
    mesa,
    mm_bd,
    nad,
    neural_cleanse,
    none,
    pruning,
    strip,
)
