"""arena: a tournament harness where backdoor attacks play against defenses."""

__version__ = "0.1.0"
