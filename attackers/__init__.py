"""Built-in attack strategies: one module each. Importing this package registers them."""

from attackers import badnets, none, pruning_aware  # noqa: F401
