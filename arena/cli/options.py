"""Argument types shared by the subcommands: each refuses bad input with one clear sentence.

argparse turns the ArgumentTypeError of a type into "argument --NAME: <sentence>", and the
`arena` parser (arena.cli.ArgumentParser) turns that into one `arena: error:` paragraph, exit 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from arena.errors import UsageError
from arena.specs import seed_problem


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be an integer, got {text!r}.") from None
    problem = seed_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem + ".")
    return value


def number(*, low: float = -math.inf, high: float = math.inf, low_open: bool = False, integer: bool = False) -> Callable[[str], float]:
    """The type of a finite number in [low, high] ((low, high] with `low_open`); NaN and the
    infinities are refused: every comparison with NaN is false, so a NaN budget or tolerance
    would pass any later range check and silently mean "no limit" or "never"."""
    left = "(" if low_open else "["
    what = ("an integer" if integer else "a finite number") + ("" if math.isinf(low) and math.isinf(high) else f" in {left}{low:g}, {high:g}]")

    def parse(text: str) -> float:
        try:
            value = int(text.strip()) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}.") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}.")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in its messages
    return parse


def output_file(text: str) -> Path:
    """A file to write a result to: not a directory, in a folder that exists (checked before any
    work, so a long run is not lost to a typo at its end)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give the path of a file to write, e.g. {path / 'results.csv'}.")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {path.parent} of {text} does not exist; create it first.")
    return path


def write_output(path: Path, data: bytes) -> None:
    """Replace the file `path` (an `output_file`) whole with `data`: a failure midway leaves the
    user's earlier file as it was, never half-written."""
    from arena.store import atomic_write  # the store's own mechanism: a temporary file, then a rename

    try:
        atomic_write(path, data)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc}); nothing was written there.") from None
