"""The `arena` command line. Results go to stdout; progress and errors to stderr."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
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
    # strategies (plugins included) may print; stdout belongs to the result alone
    with Progress(*columns, console=err, transient=True, disable=args.quiet) as progress, contextlib.redirect_stdout(sys.stderr):
        result = run_match(prepared, store, _RichProgress(progress), stealth_tolerance=args.stealth_tolerance, side_by_side=True).to_json()
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


def _results_table(frame: Any, title: str) -> Table:
    from arena.leaderboard import label_frame

    table = Table(title=title, title_justify="left")
    table.add_column("attacker", overflow="fold", min_width=14)
    table.add_column("defender", overflow="fold", min_width=12)
    for column in ("seed", "status", "CA", "ASR", "CA def.", "ASR def.", "u_D", "stealthy"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for row in label_frame(frame).sort_values(["attacker_label", "defender_label", "seed"]).itertuples():
        status = row.status if row.status == "ok" else f"[red]{row.status}[/]"
        ok = row.status == "ok"
        table.add_row(
            row.attacker_label,
            row.defender_label,
            str(row.seed),
            status,
            *(_fmt(getattr(row, c)) if ok else "" for c in ("attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility")),
            ("yes" if row.stealthy else "[yellow]no[/]") if ok else (str(row.error or "")[:60]),
        )
    return table


def _warn_mixed_numerics(frame: Any) -> None:
    """Rows of one table computed under different numerics are never mixed silently."""
    from arena.leaderboard import numerics_counts

    counts = numerics_counts(frame) if not frame.empty else {}
    if len(counts) > 1:
        err.print("[yellow]mixed numerics[/]: these rows were computed under " + "; ".join(f"{k} ({v} rows)" for k, v in counts.items()), highlight=False)


def _results_store() -> Any:
    from arena.results import ResultsStore
    from arena.store import arena_home

    return ResultsStore(arena_home() / "results.sqlite")


def cmd_tournament(args: argparse.Namespace) -> int:
    from arena.suite import load_suite

    suite = load_suite(args.suite)
    results = _results_store()
    summary = _run_suite(suite, results, args)
    frame = results.frame(suite.name)
    if args.json:
        print(frame.to_json(orient="records"))
    else:
        Console().print(_results_table(frame, f"suite {suite.name}"))
    _warn_mixed_numerics(frame)
    return 0 if summary.failed == 0 else 3


def _run_suite(suite: Any, results: Any, args: argparse.Namespace) -> Any:
    from rich.progress import TimeRemainingColumn

    from arena.tournament import Summary, run_tournament

    n = len(suite.matches())
    err.print(
        f"suite {suite.name}: {len(suite.attackers)} attackers × {len(suite.defenders)} defenders × {len(suite.seeds)} seeds = {n} matches on {suite.dataset}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/]  {task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=args.quiet) as progress:
        task = progress.add_task("matches", total=n, failed=0, rate="")

        def update(summary: Summary) -> None:
            rate = f"{summary.done / summary.seconds * 60:.1f}/min" if summary.seconds > 0 and summary.done else ""
            progress.update(task, completed=summary.skipped + summary.done, failed=summary.failed, rate=rate)

        summary = run_tournament(suite, results, address=args.address, num_cpus=args.cpus, on_update=update)
    err.print(
        f"ran {summary.done} matches ({summary.ok} ok, {summary.failed} failed), skipped {summary.skipped} already done; "
        f"attacked models trained {summary.attacks_trained}, from the store {summary.attacks_cached}; {summary.seconds:.1f} s"
    )
    return summary


def cmd_results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arena.suite import load_suite

    name = args.suite
    if Path(name).exists():
        name = load_suite(name).name
    results = _results_store()
    frame = results.frame(name)
    if frame.empty:
        known = results.suites()
        raise UsageError(f"no results for suite {name!r}. Suites with results: {', '.join(known) if known else '(none)'}.")
    _warn_mixed_numerics(frame)
    if args.format == "table":
        Console().print(_results_table(frame, f"suite {name}"))
    elif args.format == "parquet":
        if not args.output:
            raise UsageError("--format parquet needs --output FILE (it is binary).")
        frame.to_parquet(args.output, index=False)
    else:
        text = frame.to_csv(index=False) if args.format == "csv" else frame.to_json(orient="records", indent=1)
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _read_matrix(path: str) -> tuple[list[str], list[str], Any]:
    import numpy as np
    import pandas as pd

    try:
        frame = pd.read_csv(path, index_col=0)
    except FileNotFoundError:
        raise UsageError(f"no matrix file at {path}.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a readable CSV matrix ({exc}).") from None
    if frame.empty:
        raise UsageError(f"{path} holds no cells: the first row names the attackers, the first column the defenders.")
    try:
        values = frame.to_numpy(dtype=float)
    except ValueError as exc:
        raise UsageError(f"{path} has a cell that is not a number ({exc}).") from None
    if not np.all(np.isfinite(values)):
        raise UsageError(f"{path} has empty or non-finite cells; the game needs every cell.")
    rows, cols = [str(r) for r in frame.index], [str(c) for c in frame.columns]
    for what, labels in (("defender (row)", rows), ("attacker (column)", cols)):
        if len(set(labels)) != len(labels):
            raise UsageError(f"{path} repeats a {what} label.")
    return rows, cols, values


def cmd_nash(args: argparse.Namespace) -> int:
    from arena import game

    rows, cols, values = _read_matrix(args.matrix)
    solution = game.solve_zero_sum(values)
    result = solution.to_dict(rows, cols)
    if args.json:
        print(json.dumps(result))
        return 0
    console = Console()
    console.print(f"game value (defender utility at equilibrium): [bold]{solution.value:.4f}[/]   exploitability {solution.exploitability:.2e}")
    for side, labels, mix in (("defender", rows, solution.defender), ("attacker", cols, solution.attacker)):
        table = Table(title=f"{side} equilibrium mixture (maximum entropy)", title_justify="left")
        table.add_column(side)
        table.add_column("probability", justify="right")
        for label, p in sorted(zip(labels, mix), key=lambda t: -t[1]):
            table.add_row(label, f"{p:.4f}")
        console.print(table)
    return 0


def _suite_path(name: str) -> Any:
    from pathlib import Path

    path = Path(name)
    if path.exists():
        return path
    candidate = Path("leaderboards") / name / "suite.yaml"
    if candidate.exists():
        return candidate
    raise UsageError(f"no suite {name!r}: give a suite.yaml path, or the name of a folder under ./leaderboards/ holding one.")


def _suite_frame(suite: Any, results: Any) -> Any:
    frame = results.frame(suite.name)
    keys = {m.key for m in suite.matches()}
    return frame[frame.match_key.isin(keys)] if not frame.empty else frame


def _render_board(board: Any, console: Console) -> None:
    from rich.text import Text

    if board.solution is None:
        console.print("[yellow]No complete game: every strategy of one side was left out.[/]")
    else:
        console.print(f"[bold]{board.suite}[/]: game value {board.solution.value:.3f} (defender utility at equilibrium), exploitability {board.solution.exploitability:.1e}")
        s = board.scores
        for side, labels, mix in (("defender", board.defenders, board.solution.defender), ("attacker", board.attackers, board.solution.attacker)):
            table = Table(title=f"{side}s", title_justify="left")
            for column in ("rank", side, "Nash-averaged [90% interval]", "worst case [90% interval]", "worst rank", "eq. weight"):
                table.add_column(column, justify="left" if column == side else "right")
            order = sorted(range(len(labels)), key=lambda i: (-s[f"{side}_nash"][i], labels[i]))
            for i in order:
                table.add_row(
                    str(s[f"{side}_nash_rank"][i]),
                    labels[i],
                    f"{s[f'{side}_nash'][i]:+.3f} [{s[f'{side}_nash_lo'][i]:+.3f}, {s[f'{side}_nash_hi'][i]:+.3f}]",
                    f"{s[f'{side}_worst'][i]:+.3f} [{s[f'{side}_worst_lo'][i]:+.3f}, {s[f'{side}_worst_hi'][i]:+.3f}]",
                    str(s[f"{side}_worst_rank"][i]),
                    f"{mix[i]:.3f}",
                )
            console.print(table)
        matrix = Table(title="defender utility CA − ASR (rows: defenders, columns: attackers), mean ± sd; CA / ASR below", title_justify="left", show_lines=True)
        matrix.add_column("")
        for c in board.attackers:
            matrix.add_column(c, justify="right", overflow="fold")
        u, usd, ca, asr = board.matrix, board.spread("utility"), board.mean("defended_ca"), board.mean("defended_asr")
        for i, r in enumerate(board.defenders):
            cells = []
            for j in range(len(board.attackers)):
                colour = "green" if u[i, j] > 0.5 else "yellow" if u[i, j] > 0 else "red"
                cells.append(Text.assemble((f"{u[i, j]:+.3f} ± {usd[i, j]:.3f}", colour), f"\n{ca[i, j]:.3f} / {asr[i, j]:.3f}"))
            matrix.add_row(r, *cells)
        console.print(matrix)
    if board.detection:
        table = Table(title="detection (model-level verdicts; backdoored = attacker not `none`)", title_justify="left")
        for column in ("defender", "backdoored", "honest", "TPR", "FPR", "AUROC", "target hit"):
            table.add_column(column, justify="left" if column == "defender" else "right")
        for d, r in sorted(board.detection.items()):
            table.add_row(d, str(r["backdoored"]), str(r["honest"]), *(_fmt(r[k]) for k in ("tpr", "fpr", "auroc", "target_hit")))
        console.print(table)
    if len(board.numerics) > 1:
        console.print("[yellow]mixed numerics[/]: " + "; ".join(f"{k}: {v} rows" for k, v in board.numerics.items()))
    elif board.numerics:
        console.print(f"numerics: {next(iter(board.numerics))}")
    if board.stale:
        console.print(f"[yellow]{len(board.stale)} stale rows[/] (their strategy's code changed since; `arena leaderboard refresh` re-runs them), e.g. {next(iter(board.stale.values()))}")
    for label, why in sorted(board.excluded.items()):
        console.print(f"[yellow]left out[/] {label}: {why}")


def _pair(check: Any, key: str) -> str:
    reproduced = check.reproduced.get(key)
    return f"{check.published[key]:.3f} / " + ("—" if reproduced is None else f"{reproduced:.3f}")


def cmd_verify(args: argparse.Namespace) -> int:
    from arena.suite import load_suite
    from arena.verify import choose, published_rows, verify_cells

    path = _suite_path(args.suite)
    suite = load_suite(path)
    folder = Path(path).parent if Path(path).name == "suite.yaml" else Path(path)
    chosen = choose(published_rows(folder, suite.name), args.cells, args.seed, suite.name)
    err.print(f"verifying {len(chosen)} published cells of {suite.name} from an empty store (seed {args.seed})")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=args.quiet) as progress, contextlib.redirect_stdout(sys.stderr):
        checks = verify_cells(chosen, suite, tolerance=args.tolerance, progress=_RichProgress(progress))
    ok = sum(c.reproduces for c in checks)
    if args.json:
        print(json.dumps({"suite": suite.name, "cells": len(checks), "reproduced": ok, "checks": [c.to_dict() for c in checks]}))
    else:
        console = Console()
        table = Table(title=f"{suite.name}: published / reproduced", title_justify="left")
        for column in ("#", "attacker", "defender", "seed", "CA", "ASR", "u_D", "model sha256"):
            table.add_column(column, justify="right" if column in ("CA", "ASR", "u_D", "seed") else "left", overflow="fold")
        for i, c in enumerate(checks, 1):
            sha = f"{c.published['artifact_sha256'][:8]} / {str(c.reproduced.get('artifact_sha256', '—'))[:8]}"
            table.add_row(str(i), c.attacker, c.defender, str(c.seed), *(_pair(c, k) for k in ("ca", "asr", "utility")), sha)
        console.print(table)
        for i, c in enumerate(checks, 1):
            console.print(f"  {i}. " + ("[green]reproduces[/]" if c.reproduces else "[red]DIFFERS[/]") + f": {c.why}", highlight=False)
        differ = sorted({d for c in checks for d in c.numerics_differ})
        if differ:
            console.print("numerics that differ from the published rows: " + "; ".join(differ), highlight=False)
        console.print(f"{ok} of {len(checks)} cells reproduce.")
    return 0 if ok == len(checks) else 1


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from arena.leaderboard import build_board, publish
    from arena.suite import load_suite, with_strategies

    if args.action == "verify":
        return cmd_verify(args)
    suite = load_suite(_suite_path(args.suite))
    results = _results_store()
    if args.action == "refresh":
        if args.with_:
            suite = with_strategies(suite, args.with_)
        cmd = argparse.Namespace(suite=None, address=args.address, cpus=args.cpus, quiet=args.quiet, json=False)
        _run_suite(suite, results, cmd)
    frame = _suite_frame(suite, results)
    if frame.empty:
        raise UsageError(f"suite {suite.name!r} has no results yet; run `arena leaderboard refresh {args.suite}`.")
    board = build_board(frame, suite.name, include_nonstealthy=args.include_nonstealthy)
    if args.action == "refresh":
        folder = suite.path.parent if suite.path is not None and suite.path.name == "suite.yaml" else _suite_path(args.suite).parent
        publish(board, frame, folder)
        err.print(f"published {folder}/: results.csv, equilibrium.json, README.md, index.html, heatmaps")
    _render_board(board, Console())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import os

    from arena.contract import check

    results = check(args.kind, args.strategy, time_budget_s=args.time_budget)
    table = Table(title=f"contract of {args.kind} {args.strategy}", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in results:
        table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
    Console().print(table)
    failed = [c for c in results if not c.ok]
    if failed:
        err.print(f"[red]{len(failed)} check(s) failed.[/]")
    sys.stdout.flush()
    sys.stderr.flush()
    # a strategy that overran its budget may still be running in a thread: do not wait for it
    os._exit(1 if failed else 0)


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

    tour = sub.add_parser("tournament", help="play a suite's grid of attackers x defenders x seeds on Ray")
    tour.add_argument("suite", help="suite YAML file, or a folder holding suite.yaml")
    tour.add_argument("--address", default=None, help="Ray cluster to attach to (default: $RAY_ADDRESS, else start Ray locally)")
    tour.add_argument("--cpus", type=int, default=None, help="CPUs for a local Ray (default: all cores)")
    tour.add_argument("--json", action="store_true", help="print the results table as JSON records")
    tour.add_argument("--quiet", action="store_true", help="no progress display")
    tour.set_defaults(func=cmd_tournament)

    res = sub.add_parser("results", help="a suite's results as a table or a file")
    res.add_argument("suite", help="suite name, or its YAML file / folder")
    res.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    res.add_argument("--output", default=None, help="write to this file instead of stdout")
    res.set_defaults(func=cmd_results)

    nash = sub.add_parser("nash", help="solve a utility matrix you bring (CSV) for its equilibrium")
    nash.add_argument("matrix", help="CSV: first row the attacker labels after an empty corner, first column the defender labels, cells the defender's utility")
    nash.add_argument("--json", action="store_true", help="one JSON object: value, defender, attacker, exploitability")
    nash.set_defaults(func=cmd_nash)

    board = sub.add_parser("leaderboard", help="show or refresh a suite's leaderboard")
    board.add_argument("action", choices=["show", "refresh", "verify"], help="show the board, refresh it (run missing or stale cells and publish), or verify published cells")
    board.add_argument("suite", help="suite name (folder under ./leaderboards/) or suite.yaml path")
    board.add_argument("--with", dest="with_", action="append", default=[], metavar="NAME", help="also play this registered strategy (e.g. a plugin package/name)")
    board.add_argument("--include-nonstealthy", action="store_true", help="keep attacks that fail the stealth gate in the game")
    board.add_argument("--address", default=None, help="Ray cluster to attach to")
    board.add_argument("--cpus", type=int, default=None, help="CPUs for a local Ray")
    board.add_argument("--quiet", action="store_true", help="no progress display")
    board.add_argument("--cells", type=int, default=5, help="verify: how many published cells to re-play (default 5)")
    board.add_argument("--seed", type=int, default=0, help="verify: seed of the random choice of cells (default 0)")
    board.add_argument("--tolerance", type=float, default=0.02, help="verify: allowed gap in CA, ASR and utility under other numerics (default 0.02)")
    board.add_argument("--json", action="store_true", help="verify: one JSON object on stdout")
    board.set_defaults(func=cmd_leaderboard)

    chk = sub.add_parser("check", help="run the strategy contract on tiny data (for plugin authors)")
    chk.add_argument("kind", choices=["attacker", "defender"])
    chk.add_argument("strategy", help="registered name (e.g. package/name) or path/to/file.py:ClassName")
    chk.add_argument("--time-budget", type=float, default=60.0, help="seconds one run may take (default 60)")
    chk.set_defaults(func=cmd_check)

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
