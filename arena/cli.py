"""The `arena` command line. Results go to stdout; progress and errors to stderr."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import arena
from arena.errors import ArenaError, UsageError

err = Console(stderr=True)


def _parse_sets(pairs: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """`--set attacker.NAME=VALUE` / `--set defender.NAME=VALUE` into two override dicts."""
    out: dict[str, dict[str, str]] = {"attacker": {}, "defender": {}}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        role, dot, name = key.partition(".")
        if not eq or not dot or role not in out or not name:
            raise UsageError(f"--set {pair!r} is not of the form attacker.NAME=VALUE or defender.NAME=VALUE.")
        out[role][name.strip()] = value
    return out["attacker"], out["defender"]


class _RichProgress:
    """Adapts the strategies' (stage, done, total) reports to a rich progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _render_match(result: dict[str, Any], console: Console) -> None:
    a, d = result["attacker"], result["defender"]
    title = f"{a['name']} v{a['version']}  vs  {d['name']} v{d['version']}   ({result['dataset']}, seed {result['seed']})"
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("clean accuracy", justify="right")
    table.add_column("attack success", justify="right")
    table.add_row("honest baseline", _fmt(result["honest"]["ca"]), "")
    table.add_row("attacked, undefended", _fmt(result["attacked"]["ca"]), _fmt(result["attacked"]["asr"]))
    table.add_row("attacked, defended", _fmt(result["defended"]["ca"]), _fmt(result["defended"]["asr"]))
    console.print(table)
    per_trigger = result["attacked"]["asr_per_trigger"]
    if len(per_trigger) > 1:
        for name in per_trigger:
            console.print(f"  trigger {name}: ASR {_fmt(per_trigger[name])} → {_fmt(result['defended']['asr_per_trigger'][name])}")
    if "frr" in result["defended"]:
        console.print(f"  input filter: false rejections {_fmt(result['defended']['frr'])} of clean inputs")
    verdict = result["defended"]["verdict"]
    if verdict is not None:
        flagged = "[red]flagged[/]" if verdict["flagged"] else "not flagged"
        console.print(f"  verdict: {flagged}, score {verdict['score']:.3f}, suspected labels {verdict['labels']}")
    stealth = "[green]stealthy[/]" if result["stealthy"] else "[yellow]not stealthy[/] (undefended CA more than the tolerance below honest)"
    console.print(f"  defender utility CA − ASR: [bold]{result['utility']:+.3f}[/]    attack: {stealth}")
    s = result["seconds"]
    cache = " (attacked model from the store)" if result["cached"] else ""
    console.print(f"  seconds: attack {s['attack']:.1f}{cache}, defense {s['defense']:.1f}, this run {s['total']:.1f}")
    console.print(f"  clean samples given to the defender: {result['clean_samples']}")


def cmd_match(args: argparse.Namespace) -> int:
    from arena.match import prepare, run_match
    from arena.store import ArtifactStore

    attacker_params, defender_params = _parse_sets(args.set)
    prepared = prepare(
        args.attacker,
        args.defender,
        attacker_params=attacker_params,
        defender_params=defender_params,
        dataset=args.dataset,
        seed=args.seed,
        clean_budget=args.clean_budget,
        epochs=args.epochs,
    )
    store = ArtifactStore()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=args.quiet) as progress:
        result = run_match(prepared, store, _RichProgress(progress), stealth_tolerance=args.stealth_tolerance).to_json()
    if args.json:
        print(json.dumps(result))
    else:
        _render_match(result, Console())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from arena.registry import ATTACKERS, DEFENDERS

    registries = [r for r in (ATTACKERS, DEFENDERS) if args.kind in (None, r.kind + "s", r.kind)]
    listing: dict[str, list[dict[str, Any]]] = {}
    console = Console()
    for registry in registries:
        rows = []
        for name, cls in registry.all_classes().items():
            if cls is None:
                rows.append({"name": name, "error": registry.plugin_errors.get(name, "failed to load")})
                continue
            rows.append(
                {
                    "name": name,
                    "version": cls.version,
                    "summary": cls.summary(),
                    "paper": cls.paper,
                    "deviations": cls.deviations,
                    "params": {p: {"default": spec.default, "space": spec.describe(), "help": spec.help} for p, spec in cls.space.items()},
                }
            )
        listing[registry.kind + "s"] = rows
        if not args.json:
            table = Table(title=f"{registry.kind}s", title_justify="left", show_lines=True)
            for column in ("name", "version", "what it does / paper", "hyperparameters (default)"):
                table.add_column(column)
            for row in rows:
                if "error" in row:
                    table.add_row(row["name"], "", f"[red]unusable:[/] {row['error']}", "")
                    continue
                params = "\n".join(f"{p}={v['default']!r}  [dim]{v['space']}[/]" for p, v in row["params"].items())
                table.add_row(row["name"], row["version"], f"{row['summary']}\n[dim]{row['paper']}[/]", params or "—")
            console.print(table)
    if args.json:
        print(json.dumps(listing, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arena", description="Backdoor attacks play against defenses.")
    parser.add_argument("--version", action="version", version=f"arena {arena.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="play one attacker against one defender and score it")
    match.add_argument("--attacker", required=True, help="attacker name (see `arena list`)")
    match.add_argument("--defender", required=True, help="defender name (see `arena list`)")
    match.add_argument("--dataset", default="digits", help="digits (embedded, default) or fashion_mnist")
    match.add_argument("--seed", type=int, default=0, help="match seed (default 0)")
    match.add_argument("--clean-budget", type=float, default=0.05, help="defender's clean share of the training split (default 0.05)")
    match.add_argument("--epochs", type=int, default=None, help="attacker training budget in epochs (default: the dataset's)")
    match.add_argument("--set", action="append", default=[], metavar="ROLE.NAME=VALUE", help="hyperparameter override, e.g. attacker.target=3")
    match.add_argument("--stealth-tolerance", type=float, default=0.03, help="allowed CA drop below honest (default 0.03)")
    match.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")
    match.add_argument("--quiet", action="store_true", help="no progress display")
    match.set_defaults(func=cmd_match)

    lst = sub.add_parser("list", help="list registered attackers and defenders")
    lst.add_argument("kind", nargs="?", choices=["attackers", "defenders"], help="only this kind")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
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
