"""`arena check`: the strategy contract on tiny data, for plugin authors."""

from __future__ import annotations

import argparse

from arena.cli import render
from arena.cli.options import number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="run the strategy contract on tiny data (for plugin authors)")
    p.add_argument("kind", choices=["attacker", "defender"])
    p.add_argument("strategy", help="registered name (e.g. package/name) or path/to/file.py:ClassName")
    p.add_argument("--time-budget", type=number(low=0, low_open=True), default=60.0, help="seconds one run may take (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arena.contract import check

    results = check(args.kind, args.strategy, time_budget_s=args.time_budget)
    render.check_report(args.kind, args.strategy, results, render.out())
    failed = [c for c in results if not c.ok]
    if failed:
        render.err.print(f"[red]{len(failed)} check(s) failed.[/]")
    return 1 if failed else 0
