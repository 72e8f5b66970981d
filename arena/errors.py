"""User-facing errors: each carries one clear paragraph and an exit code for the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ArenaError(Exception):
    """An error caused by input or state the user can fix; the CLI prints it without a traceback."""

    exit_code = 1


class UsageError(ArenaError):
    """Bad command-line or configuration input."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A name (strategy, dataset, hyperparameter) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], owner: str = "") -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(known) if known else "(none)"
        of = f" of {owner}" if owner else ""
        super().__init__(f"Unknown {kind} {name!r}{of}.{hint} Known {kind}s{of}: {listing}.")
        self.name = name
        self.suggestions = close


class ParamError(UsageError):
    """A hyperparameter outside its declared space or of the wrong type."""


class DatasetMissingError(ArenaError):
    """A dataset whose files are not on this machine."""


class StoreError(ArenaError):
    """The state directory (ARENA_HOME) cannot be used."""


class ArtifactIntegrityError(ArenaError):
    """A stored artifact whose bytes do not match its manifest: refused, never loaded."""


class StrategyError(ArenaError):
    """A strategy broke its contract (wrong output type or shape, mutated its input, ...)."""
