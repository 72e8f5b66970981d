"""The `arena` command line: one module per subcommand, every view in `render`.

Results go to stdout; progress and errors to stderr. No logic a library user would need lives
here: each subcommand parses its arguments, calls the library, and renders what comes back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import arena
from arena.cli import check, leaderboard, match, nash, oracle, results, strategies, tournament
from arena.cli.render import err
from arena.errors import ArenaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Backdoor attacks play against defenses.")
    parser.add_argument("--version", action="version", version=f"arena {arena.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (match, tournament, results, nash, leaderboard, oracle, check):
        module.add_parser(sub)
    strategies.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ArenaError as exc:
        err.print(f"[bold red]arena: error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("arena: interrupted; everything stored so far is kept.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
