"""The `arena` command line: one module per subcommand, every view in `render`.

Results go to stdout; progress and errors to stderr. No logic a library user would need lives
here: each subcommand parses its arguments, calls the library, and renders what comes back.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

import arena
from arena.cli import check, doctor, leaderboard, match, nash, oracle, results, strategies, submit, tournament
from arena.cli.render import err, error, notice_logging
from arena.errors import ArenaError, UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but bad arguments are a UsageError: one `arena: error:` paragraph and exit 2,
    like every other bad input, instead of a usage dump and a SystemExit from inside main."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (`{self.prog} --help` lists the options).")


def build_parser() -> argparse.ArgumentParser:
    # subparsers are made of the parent's class, so every subcommand refuses alike
    parser = ArgumentParser(prog="arena", description="Backdoor attacks play against defenses.")
    parser.add_argument("--version", action="version", version=f"arena {arena.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (match, tournament, results, nash, leaderboard, oracle, check, submit, doctor):
        module.add_parser(sub)
    strategies.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ray_was_running = _ray_running()
    try:
        with notice_logging():
            args = build_parser().parse_args(argv)
            return int(args.func(args))
    except ArenaError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        if not ray_was_running:
            _shutdown_ray()
        err.print("arena: interrupted; everything stored so far is kept.", markup=False, highlight=False)
        return 130


def _ray_running() -> bool:
    """Whether Ray is up in this process (without importing it: most commands never need it)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _shutdown_ray() -> None:
    """Stop the Ray this command started, so no worker or raylet outlives an interrupted run; a
    second Ctrl-C while it stops would only leave them orphaned, so it is ignored meanwhile."""
    if not _ray_running():
        return
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        sys.modules["ray"].shutdown()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.modules["ray"].shutdown()
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
