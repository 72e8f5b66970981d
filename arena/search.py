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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.device import check_gpus_per_task, cluster_gpus

OBJECTIVE = "objective"


@dataclass(frozen=True)
class SearchResult:
    """The best configuration found, its objective, and what the search cost."""

    config: dict[str, Any]
    value: float
    trials: int
    failed: int
    seconds: float  # the trials' own time, summed


def best_response(
    objective: Callable[[dict[str, Any]], float],
    param_space: dict[str, Any],
    *,
    mode: str,
    trials: int,
    seed: int,
    resources: dict[str, float] | None = None,
    storage_path: str | Path | None = None,
    name: str = "best_response",
) -> SearchResult:
    """Search `param_space` (Ray Tune domains, e.g. `Space.tune_space()`) for the configuration
    that maximises (`mode="max"`) or minimises (`"min"`) `objective(config)`, over `trials`
    seeded random configurations, each trial holding `resources` (e.g. `{"cpu": 1, "gpu": 0.25}`:
    four trials per card; a GPU share on a cluster without GPUs is refused before any trial).
    Ray must be running (`ray.init`) or it starts locally."""
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

    def trial(config: dict[str, Any]) -> None:
        import time

        start = time.perf_counter()
        value = float(objective(config))
        if not math.isfinite(value):
            raise ValueError(f"the objective returned {value} at {config}")
        tune.report({OBJECTIVE: value, "trial_seconds": time.perf_counter() - start})

    tuner = tune.Tuner(
        tune.with_resources(trial, resources or {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode=mode, num_samples=trials, search_alg=BasicVariantGenerator(random_state=seed), reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=None if storage_path is None else str(Path(storage_path).resolve()), verbose=0),
    )
    grid = tuner.fit()
    results = [grid[i] for i in range(len(grid))]
    finished = [(r.config or {}, float(r.metrics[OBJECTIVE]), float(r.metrics.get("trial_seconds", 0.0))) for r in results if r.error is None and r.metrics and OBJECTIVE in r.metrics]
    if not finished:
        raise RuntimeError(f"all {len(results)} trials of the search failed; the first error: {grid.errors[0] if grid.errors else 'none reported'}")
    pick = max if mode == "max" else min
    config, value, _ = pick(finished, key=lambda f: f[1])
    return SearchResult(config=dict(config), value=value, trials=len(results), failed=len(results) - len(finished), seconds=sum(f[2] for f in finished))
