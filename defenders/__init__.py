"""Built-in defense strategies: one module each. Importing this package registers them."""

from arena.defenders import (  # noqa: F401
    deep_inspect,
    feature_squeezing,
    fine_pruning,
    fine_tuning,
    neural_cleanse,
    none,
    pruning,
    strip,
)
