"""`arena match`: one attacker against one defender, scored by the evaluator."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from arena.cli import render
from arena.cli.options import number, seed
from arena.cli.tournament import add_compute_options
from arena.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("match", help="play one attacker against one defender and score it")
    p.add_argument("--attacker", required=True, help="attacker name (see `arena list`)")
    p.add_argument("--defender", required=True, help="defender name (see `arena list`)")
    p.add_argument("--dataset", default="digits", help="digits (embedded, default) or fashion_mnist")
    p.add_argument("--seed", type=seed, default=0, help="match seed (default 0)")
    p.add_argument("--clean-budget", type=number(), default=0.05, help="defender's clean share of the training split (default 0.05)")
    p.add_argument("--epochs", type=int, default=None, help="attacker training budget in epochs (default: the dataset's)")
    p.add_argument("--architecture", default="badnets_cnn", help="the task's architecture: badnets_cnn (default) or preact_resnet (a small pre-activation ResNet with batch normalisation)")
    p.add_argument("--set", action="append", default=[], metavar="ROLE.NAME=VALUE", help="hyperparameter override, e.g. attacker.target=3")
    p.add_argument("--stealth-tolerance", type=number(low=0, high=1), default=0.03, help="allowed CA drop below honest (default 0.03)")
    add_compute_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def parse_sets(pairs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """`--set attacker.NAME=VALUE` / `--set defender.NAME=VALUE` into two override dicts."""
    out: dict[str, dict[str, str]] = {"attacker": {}, "defender": {}}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        role, dot, name = key.partition(".")
        if not eq or not dot or role not in out or not name:
            raise UsageError(f"--set {pair!r} is not of the form attacker.NAME=VALUE or defender.NAME=VALUE.")
        out[role][name.strip()] = value
    return out["attacker"], out["defender"]


def run(args: argparse.Namespace) -> int:
    from arena.device import resolve
    from arena.match import prepare, run_match
    from arena.store import ArtifactStore

    compute = resolve(args.device, args.amp)  # a device this machine lacks is refused before any work
    attacker_params, defender_params = parse_sets(args.set)
    prepared = prepare(
        args.attacker,
        args.defender,
        attacker_params=attacker_params,
        defender_params=defender_params,
        dataset=args.dataset,
        seed=args.seed,
        clean_budget=args.clean_budget,
        epochs=args.epochs,
        architecture=args.architecture,
        require_applicable=True,
    )
    store = ArtifactStore()
    # strategies (plugins included) may print; stdout belongs to the result alone
    with render.stdout_to_stderr(), render.stage_progress(args.quiet) as progress:
        result = run_match(prepared, store, render.RichProgress(progress), stealth_tolerance=args.stealth_tolerance, side_by_side=True, compute=compute).to_json()
    if args.json:
        print(json.dumps(result))
    else:
        render.match(result, render.out())
    return 0
