"""`arena nash`: the equilibrium of a utility matrix the user brings."""

from __future__ import annotations

import argparse
import json

from arena.cli import render


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nash", help="solve a utility matrix you bring (CSV) for its equilibrium")
    p.add_argument("matrix", help="CSV: first row the attacker labels after an empty corner, first column the defender labels, cells the defender's utility")
    p.add_argument("--json", action="store_true", help="one JSON object: value, defender, attacker, exploitability")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arena import game

    rows, cols, values = game.read_matrix_csv(args.matrix)
    with render.stdout_to_stderr():
        solution = game.solve_zero_sum(values)
    if args.json:
        print(json.dumps(solution.to_dict(rows, cols)))
    else:
        render.equilibrium(solution, rows, cols, render.out())
    return 0
