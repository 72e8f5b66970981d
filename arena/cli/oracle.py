"""`arena oracle SUITE`: the adaptive game, grown from a suite by best responses searched with Ray Tune."""

from __future__ import annotations

import argparse
import json
from typing import Any

from arena.cli import render
from arena.cli.options import number, output_file, seed
from arena.cli.tournament import add_compute_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("oracle", help="grow a suite's game by searched best responses (double oracle) until neither side gains")
    p.add_argument("suite", help="suite YAML file, or a folder holding suite.yaml; its `search` block says what each side may search")
    p.add_argument("--iterations", type=int, default=3, help="rounds of best responses at most (default 3)")
    p.add_argument("--trials", type=int, default=8, help="Tune trials per searched strategy family and round (default 8)")
    p.add_argument("--time", type=number(), default=None, metavar="SECONDS", help="wall-time budget: searches stop when it is spent and the round in hand is the last (default: none)")
    p.add_argument("--epsilon", type=number(low=0), default=0.01, help="a best response joins the game only if it gains more than this (default 0.01)")
    p.add_argument("--search-alg", default="random", help="Tune search algorithm (default random)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the searches (default 0)")
    p.add_argument("--fresh", action="store_true", help="start every search anew (default: a search an interrupted run began or finished is resumed or read back)")
    p.add_argument("--plot", type=output_file, default=None, help="convergence plot PNG (default: oracle-<suite>.png in $ARENA_HOME)")
    p.add_argument("--cpus", type=number(low=1, integer=True), default=None, help="CPUs for a local Ray (default: all cores)")
    p.add_argument("--gpus-per-task", type=number(), default=None, metavar="SHARE", help="GPU share of each match and trial (default: the suite's, else 0)")
    add_compute_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def _play(suite: Any, args: argparse.Namespace, compute: Any, gpus: float, progress: Any) -> Any:
    from arena.adaptive import play_oracle
    from arena.results import default_results
    from arena.store import arena_home

    return play_oracle(
        suite,
        default_results(),
        iterations=args.iterations,
        trials=args.trials,
        seed=args.seed,
        epsilon=args.epsilon,
        search_alg=args.search_alg,
        compute=compute,
        gpus_per_task=gpus,
        storage=arena_home() / "oracle" / suite.name,
        on_round=progress,
        slots=_slots(gpus),
        resume=not args.fresh,
        time_budget=args.time,
    )


def _slots(gpus: float) -> int:
    """Trials the local Ray can run at once (one CPU each, and a GPU share where given)."""
    import ray

    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1))
    if gpus:
        slots = min(slots, int(resources.get("GPU", 0) / gpus))
    return max(1, slots)


def _run_oracle(suite: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Start Ray, play the oracle, store the adapted game and the plot; the report as JSON data."""
    import os

    import ray

    from arena.adaptive import adapted_game, plot, report_json
    from arena.store import arena_home

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=args.cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, configure_logging=False)

    def progress(entry: dict) -> None:
        if not args.quiet:
            added = ", ".join(entry["added"]) or "nothing"
            render.err.print(
                f"iteration {entry['iteration']}: game {entry['size'][0]}×{entry['size'][1]}, value {entry['value']:+.3f}; "
                f"defender gain {entry['defender_gain']:+.3f} ({entry['best_defender']}), attacker gain {entry['attacker_gain']:+.3f} ({entry['best_attacker']}); "
                f"added {added}; {entry['trials']} trials ({entry['failed_trials']} failed), {entry['trial_seconds']:.0f} trial-s, {entry['seconds']:.0f} s",
                highlight=False,
                markup=False,  # strategy names and their parameters, shown as they are
            )

    gpus = suite.gpus_per_task if args.gpus_per_task is None else args.gpus_per_task
    from arena.device import cluster_gpus, ray_compute

    compute = ray_compute(args.device, args.amp, gpus, cluster_gpus())  # the matches and trials are Ray tasks, as a tournament's
    report = _play(suite, args, compute, gpus, progress)
    out = report_json(report)
    # the adapted game, for `arena leaderboard refresh` to publish beside the static one
    game_path = arena_home() / "oracle" / suite.name / "game.json"
    game_path.write_text(json.dumps(adapted_game(report, suite, out), indent=1) + "\n")
    out["game"] = str(game_path)
    path = args.plot or arena_home() / f"oracle-{suite.name}.png"
    plot(report, path)
    out["plot"] = str(path)
    return out


def run(args: argparse.Namespace) -> int:
    from arena.adaptive import check_oracle
    from arena.store import ArtifactStore, arena_home
    from arena.suite import load_suite

    suite = load_suite(args.suite)
    check_oracle(suite, args.iterations, args.trials, args.search_alg, args.time)  # bad budgets and search blocks before Ray starts
    ArtifactStore(arena_home())  # an unusable ARENA_HOME likewise
    # Ray starts in here, and Tune prints its experiments' tables: stdout belongs to the result alone
    with render.stdout_to_stderr():
        out = _run_oracle(suite, args)
    if args.json:
        print(json.dumps(out))
    else:
        console = render.out()
        state = "converged" if out["converged"] else f"stopped at its {out['stopped_by']} budget"
        console.print(f"[bold]{render.plain(suite.name)}[/]: adaptive game value {out['value']:+.3f} ({state}); exploitability bound {out['exploitability']:.3f}")
        console.print("  (an empirical bound: what these searches found against the final equilibrium, not a proof)")
        for side in ("defender", "attacker"):
            mix = ", ".join(f"{k} {v:.2f}" for k, v in sorted(out[side].items(), key=lambda kv: -kv[1]) if v > 1e-6)
            console.print(f"  {side} equilibrium: {render.plain(mix)}", highlight=False)
        console.print(f"  {out['trials']} trials ({out['failed_trials']} failed), {out['trial_seconds']:.0f} trial-seconds, {out['seconds']:.0f} s; plot: {render.plain(out['plot'])}", highlight=False)
    return 0
