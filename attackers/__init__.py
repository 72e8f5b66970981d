"""Built-in attack strategies: one module each. Importing this package registers them."""

from arena.attackers import (  # noqa: F401
    all_to_all,
    badnets,
    blended,
    boosted,
    clean_label,
    feature_space,
    multi_trigger,
    none,
    pruning_aware,
    trigger_combination,
    trojan_nn,
    trojannet,
)
