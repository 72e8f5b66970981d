"""A best response found by search: a Ray Tune experiment over a hyperparameter space (docs/design.md §6).

The double oracle (`arena/oracle.py`) asks each side for a best response to the other's mixture;
this is the search that answers when the side's strategies are a hyperparameter space rather
than a list. Each trial evaluates the objective at one configuration in a Tune worker with its
declared resources; a trial that crashes is a failed trial, counted and reported, never a failed
search. The search is seeded, so the same call proposes the same configurations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.device import check_gpus_per_task, cluster_gpus

OBJECTIVE = "objective"


class NothingFinished(RuntimeError):
    """No trial of a search finished: all failed, or the time budget cut them."""

    def __init__(self, trials: int, failed: int, message: str) -> None:
        super().__init__(message)
        self.trials, self.failed = trials, failed


@dataclass(frozen=True)
class SearchResult:
    """The best configuration found, its objective, and what the search cost."""

    config: dict[str, Any]
    value: float
    trials: int
    failed: int
    seconds: float  # the trials' own time, summed
    stopped: int = 0  # trials ASHA stopped before the last budget
    wall: float = 0.0  # the whole search's wall time, Tune's own work included
    extras: dict[str, Any] = field(default_factory=dict)  # what the best trial's objective reported beside its value
    waiting: float = 0.0  # slot-seconds a trial was due but not running: Tune's scheduling, start-up and reporting
    restored: bool = False  # the experiment was found on disk and resumed (or read back, if it had finished)


def scheduling_gaps(spans: list[tuple[float, float]], start: float, end: float, slots: int) -> float:
    """Slot-seconds Tune spent between trials while trials were still waiting: each trial, in the
    order trials entered their function, takes the slot freed earliest, and the gap from that
    moment (or the search's start) to its entry counts, as does the time from the last trial's
    exit to the end of the search. Slots idle because no trial was left to run do not count."""
    free = [start] * max(1, slots)
    gaps = 0.0
    for entered, left in sorted(spans):
        i = min(range(len(free)), key=lambda j: free[j])
        gaps += max(0.0, entered - free[i])
        free[i] = max(free[i], left)
    if spans:
        gaps += max(0.0, end - max(left for _, left in spans))
    return gaps


def best_response(
    objective: Callable[..., Any],  # objective(config) (or (config, budget) with `budgets`): a value, or (value, extras)
    param_space: dict[str, Any],
    *,
    mode: str,
    trials: int,
    seed: int,
    resources: dict[str, float] | None = None,
    storage_path: str | Path | None = None,
    name: str = "best_response",
    budgets: list[int] | None = None,
    slots: int | None = None,
    resume: bool = False,
    time_budget: float | None = None,
) -> SearchResult:
    """Search `param_space` (Ray Tune domains, e.g. `Space.tune_space()`) for the configuration
    that maximises (`mode="max"`) or minimises (`"min"`) `objective(config)`, over `trials`
    seeded random configurations, each trial holding `resources` (e.g. `{"cpu": 1, "gpu": 0.25}`:
    four trials per card; a GPU share on a cluster without GPUs is refused before any trial).

    With `budgets` (increasing, e.g. training epochs), a trial evaluates `objective(config, b)`
    at each budget in turn and reports each, and ASHA (asynchronous successive halving, Li et al.
    2020) stops the trials that do worst at a budget before they reach the next; only trials
    that reach the last budget compete, with their last value. The proposals are seeded; which
    trials ASHA stops depends on the order trials finish in, so with trials running side by side
    two runs of one seed may keep different trials. Each budget is a fresh evaluation (a trial
    that reaches the last of budgets 2, 4, 8 has trained for 14), the price of stopping the rest
    early. Ray must be running (`ray.init`) or it starts locally.

    With `resume`, an experiment of the same `name` already under `storage_path` is resumed, not
    started again (the caller makes the name say everything the search depends on):
    its finished trials are read back and only the unfinished ones run (Tune's experiment state),
    so an interrupted search loses at most the trials in flight. `time_budget` (seconds) ends
    the search when spent; the trials that finished compete. `slots` (the trials that can
    run at once) lets the result say how long trials waited on Tune (`waiting`)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if trials < 1:
        raise ValueError(f"a search needs at least one trial, got {trials}")
    searchable = [k for k, v in param_space.items() if isinstance(v, tune.search.sample.Domain)]
    if not searchable:
        raise ValueError("the space has nothing to search: every parameter is fixed")
    if (resources or {}).get("gpu"):  # a GPU share per trial, checked before any trial is scheduled
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        check_gpus_per_task(float((resources or {})["gpu"]), "auto", cluster_gpus())

    steps = list(budgets or [])
    if steps and (any(b < 1 for b in steps) or steps != sorted(set(steps))):
        raise ValueError(f"budgets must be increasing positive numbers, got {steps}")

    def trial(config: dict[str, Any]) -> None:
        import time

        entered, start = time.time(), time.perf_counter()
        for rung, budget in enumerate(steps or [None], start=1):
            out = objective(config) if budget is None else objective(config, budget)
            value, extras = (out if isinstance(out, tuple) else (out, {}))
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"the objective returned {value} at {config}")
            metrics = {OBJECTIVE: value, "trial_seconds": time.perf_counter() - start, "rung": rung, "complete": rung == max(1, len(steps))}
            tune.report({**metrics, "extras": dict(extras), "entered": entered, "left": time.time()})

    scheduler = None
    if len(steps) > 1:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=len(steps), grace_period=1, reduction_factor=2)
    trainable = tune.with_resources(trial, resources or {"cpu": 1})
    path = None if storage_path is None else Path(storage_path).resolve()
    restored = resume and path is not None and tune.Tuner.can_restore(str(path / name))
    tuner = tune.Tuner.restore(str(path / name), trainable, resume_unfinished=True, restart_errored=True) if restored else tune.Tuner(  # type: ignore[operator]
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE, mode=mode, num_samples=trials, search_alg=BasicVariantGenerator(random_state=seed), scheduler=scheduler, reuse_actors=True,
            time_budget_s=time_budget,  # the search stops starting and running trials when it is spent
        ),
        run_config=tune.RunConfig(name=name, storage_path=None if path is None else str(path), verbose=0),
    )
    import time

    began, began_wall = time.perf_counter(), time.time()
    grid = tuner.fit()
    wall = time.perf_counter() - began
    results = [grid[i] for i in range(len(grid))]
    ran = [(r.config or {}, r.metrics) for r in results if r.error is None and r.metrics and OBJECTIVE in r.metrics]
    spent = sum(float(m.get("trial_seconds", 0.0)) for _, m in ran)
    # a trial ASHA stopped early does not compete: its value is that of a smaller budget
    finished = [(c, float(m[OBJECTIVE]), float(m.get("trial_seconds", 0.0))) for c, m in ran if m.get("complete", True)]
    failed = sum(1 for r in results if r.error is not None)  # the rest without a value were cut by the time budget
    if not finished:
        first = grid.errors[0] if grid.errors else "none reported"
        raise NothingFinished(len(results), failed, f"none of the {len(results)} trials of the search finished ({failed} failed); the first error: {first}")
    pick = max if mode == "max" else min
    best = pick(range(len(finished)), key=lambda i: finished[i][1])
    config, value, _ = finished[best]
    extras = [m.get("extras") or {} for _, m in ran if m.get("complete", True)][best]
    # trials run this time (a resumed experiment's earlier trials ran before `began_wall`)
    spans = [(float(m["entered"]), float(m["left"])) for _, m in ran if "entered" in m and float(m["entered"]) >= began_wall]
    waiting = scheduling_gaps(spans, began_wall, began_wall + wall, slots or 1) if spans else 0.0
    return SearchResult(
        config=dict(config), value=value, trials=len(results), failed=failed, seconds=spent,
        stopped=len(ran) - len(finished), wall=wall, extras=dict(extras), waiting=waiting, restored=restored,
    )
