"""`arena tournament`: a suite's grid on Ray, with live progress."""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from arena.cli import render
from arena.cli.options import number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tournament", help="play a suite's grid of attackers x defenders x seeds on Ray")
    p.add_argument("suite", help="suite YAML file, or a folder holding suite.yaml")
    add_cluster_options(p)
    p.add_argument("--json", action="store_true", help="print the results table as JSON records")
    p.set_defaults(func=run)


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster to attach to (default: $RAY_ADDRESS, else start Ray locally)")
    p.add_argument("--cpus", type=number(low=1, integer=True), default=None, help="CPUs for a local Ray (default: all cores)")
    p.add_argument(
        "--gpus-per-task", type=number(), default=None, metavar="SHARE", help="GPU share of each match, e.g. 0.25 packs four per card (default: the suite's gpus_per_task, else 0: CPUs)"
    )
    add_compute_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")


def add_compute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (a GPU where the job has one), cpu or cuda (default auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast): faster on a GPU, recorded in the numerics; off by default")


def play(suite: Any, results: Any, *, address: str | None, cpus: int | None, quiet: bool, device: str = "auto", amp: bool = False, gpus_per_task: float | None = None) -> Any:
    """Run the suite's missing or stale matches with a progress display; returns the summary."""
    from arena.tournament import Summary, run_tournament

    n = len(suite.matches())
    render.err.print(f"suite {render.plain(suite.name)}: {len(suite.attackers)} attackers × {len(suite.defenders)} defenders × {len(suite.seeds)} seeds = {n} matches on {render.plain(suite.dataset)}")
    for (attacker, defender), why in suite.not_applicable.items():
        render.err.print(f"  n/a: {render.plain(attacker.name)} vs {render.plain(defender.name)}: {render.plain(why)} (not run; scored as the published model deployed as it is)")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/]  {task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=render.err, disable=quiet) as progress:
        task = progress.add_task("matches", total=n, failed=0, rate="")

        def update(summary: Summary) -> None:
            rate = f"{summary.done / summary.seconds * 60:.1f}/min" if summary.seconds > 0 and summary.done else ""
            progress.update(task, completed=summary.skipped + summary.done, failed=summary.failed, rate=rate)

        summary = run_tournament(suite, results, address=address, num_cpus=cpus, on_update=update, device=device, amp=amp, gpus_per_task=gpus_per_task)
    render.err.print(
        f"ran {summary.done} matches ({summary.ok} ok, {summary.failed} failed), skipped {summary.skipped} already done; "
        + (f"played {summary.replayed} kept rows again, as they scored another model of their attack than this store's; " if summary.replayed else "")
        + f"attacked models trained {summary.attacks_trained}, from the store {summary.attacks_cached}; {summary.seconds:.1f} s"
    )
    return summary


def run(args: argparse.Namespace) -> int:
    from arena.results import default_results
    from arena.suite import load_suite

    suite = load_suite(args.suite)
    results = default_results()
    with render.stdout_to_stderr():  # Ray starts in here: its processes never write to our stdout
        summary = play(suite, results, address=args.address, cpus=args.cpus, quiet=args.quiet, device=args.device, amp=args.amp, gpus_per_task=args.gpus_per_task)
        frame = results.frame(suite.name)
    if args.json:
        print(frame.to_json(orient="records"))
    else:
        render.out().print(render.results_table(frame, f"suite {suite.name}"))
    render.warn_mixed_numerics(frame)
    return 0 if summary.failed == 0 else 3
