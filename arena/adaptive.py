"""The adaptive game on real matches: `arena oracle SUITE` (docs/design.md §6).

The double oracle (`arena/oracle.py`) grows a suite's game by best responses; here its cells are
real matches and its oracles are Ray Tune searches whose trials play real matches:

- A cell is the mean over the suite's seeds of the defender's utility CA − ASR, with the stealth
  gate binding: an attack whose undefended CA falls more than the suite's tolerance below the
  honest model's is a failed attack (its ASR counts as 0). Cells are played as tournaments and
  written to the results store under `<suite>+oracle`, cached by match key like any row.
- What a side may search is the suite's `search` block: per strategy family (a name in the
  suite), the parameters and their ranges. The rest of a family's parameters are those of its
  first entry in the suite. (Search ranges are the researcher's: a validation range such as a
  trigger of up to 4096 pixels is not a range worth searching.)
- The attacker's oracle searches each family against the defenders in the support of the
  defender's equilibrium mixture, over every seed, minimising the defender's expected utility,
  with ASHA on the training budget (rungs at a quarter, a half and all of the suite's epochs:
  a configuration that does poorly on a short budget is not trained to the end). The defender's
  oracle searches each family against the attacker mixture's support (the attacked models are
  in the store), maximising. A trial that fails (a configuration its strategy refuses) is a
  failed trial, counted, never a failed search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arena.device import CPU, Compute, compute_class
from arena.errors import ParamError, UnknownNameError, UsageError
from arena.oracle import Iteration, OracleResult, double_oracle
from arena.params import Bool, Choice, Float, Int
from arena.registry import ATTACKERS, DEFENDERS
from arena.results import ResultsStore
from arena.specs import StrategySpec
from arena.suite import Suite

SEARCH_ALGORITHMS = ("random",)
SUPPORT = 1e-6  # a mixture's weight below this is outside its support


class OracleError(UsageError):
    """A suite or a budget the adaptive game cannot be played with."""


# ---------------------------------------------------------------------------------------------
# What may be searched


@dataclass(frozen=True)
class FamilySearch:
    """One strategy family's search: its fixed parameters and the Tune domains of the searched ones."""

    kind: str
    name: str
    base: dict[str, Any]
    ranges: dict[str, Any]  # parameter -> JSON range as written in the suite (for reports)

    def domains(self) -> dict[str, Any]:
        from ray import tune

        cls = _registry(self.kind).get(self.name)
        out: dict[str, Any] = {}
        for param, spec in self.ranges.items():
            declared = cls.space._params[param]
            if isinstance(spec, dict):
                out[param] = tune.choice(list(spec["choices"]))
            elif isinstance(declared, Int):
                out[param] = tune.randint(int(spec[0]), int(spec[1]) + 1)
            else:
                log = len(spec) > 2 and spec[2] == "log"
                out[param] = tune.loguniform(float(spec[0]), float(spec[1])) if log else tune.uniform(float(spec[0]), float(spec[1]))
        return out

    def spec(self, config: dict[str, Any]) -> StrategySpec:
        """The strategy of one configuration, validated by its class (a ParamError if refused)."""
        cls = _registry(self.kind).get(self.name)
        chosen = {**self.base, **{k: config[k] for k in self.ranges}}
        instance = cls(**chosen)
        return StrategySpec.of(self.name, instance.version, instance.spec_params)


BASELINES = ("none",)  # the no-attack and no-defense baselines: nothing to search


def parse_search(block: Any, suite: Suite) -> tuple[list[FamilySearch], list[FamilySearch]]:
    """The suite's `search` block, checked against the families in the suite and their spaces:

        search:
          attackers:
            badnets: {poison_rate: [0.01, 0.3], trigger_size: [1, 4]}
            pruning_aware: declared       # the ranges its strategy declares
          defenders: [fine_pruning, strip] # names alone: their declared ranges

    With no block, or `search: declared`, every family in the suite (the `none` baselines aside)
    is searched over the ranges its strategy declares (`Param(search=...)`); the suite's own
    ranges replace a strategy's where a researcher wants others.
    """
    if block is None or block == "declared":
        block = {
            side: [n for n in dict.fromkeys(e.name for e in entries) if n not in BASELINES and _registry(side[:-1]).get(n).space.search_ranges()]
            for side, entries in (("attackers", suite.attackers), ("defenders", suite.defenders))
        }
    if not isinstance(block, dict) or not block or set(block) - {"attackers", "defenders"}:
        raise OracleError(
            "the suite's `search` block must be `declared` (every family's declared ranges) or map `attackers:` and/or `defenders:` "
            "to the strategies of the suite to search, each with its parameter ranges or `declared`."
        )
    sides: dict[str, list[FamilySearch]] = {"attacker": [], "defender": []}
    for kind, entries in (("attacker", suite.attackers), ("defender", suite.defenders)):
        registry = _registry(kind)
        families = block.get(kind + "s") or {}
        if isinstance(families, list) and all(isinstance(n, str) for n in families):
            families = dict.fromkeys(families, "declared")
        if not isinstance(families, dict):
            raise OracleError(f"`search.{kind}s` must list strategy names or map them to parameter ranges.")
        for name, ranges in families.items():
            first = next((e for e in entries if e.name == name), None)
            if first is None:
                raise OracleError(f"`search.{kind}s` names {name!r}, which is not among the suite's {kind}s ({', '.join(sorted({e.name for e in entries}))}).")
            space = registry.get(name).space
            if ranges == "declared":
                ranges = space.search_ranges()
                if not ranges:
                    raise OracleError(f"`search.{kind}s.{name}`: {kind} {name!r} declares no search ranges; give its parameters and ranges in the suite.")
            if not isinstance(ranges, dict) or not ranges:
                raise OracleError(f"`search.{kind}s.{name}` has nothing to search: give at least one parameter with a range, or `declared`.")
            for param, spec in ranges.items():
                if param not in space._params:
                    raise UnknownNameError("hyperparameter", param, space._params, f"{kind} {name!r}")
                _check_range(kind, name, param, spec, space._params[param])
            sides[kind].append(FamilySearch(kind, name, dict(first.param_dict), dict(ranges)))
    if not sides["attacker"] and not sides["defender"]:
        raise OracleError("the suite's `search` block searches nothing.")
    return sides["attacker"], sides["defender"]


def _registry(kind: str) -> Any:
    return ATTACKERS if kind == "attacker" else DEFENDERS


def _check_range(kind: str, name: str, param: str, spec: Any, declared: Any) -> None:
    where = f"`search.{kind}s.{name}.{param}`"
    if isinstance(spec, dict):
        choices = spec.get("choices")
        if set(spec) != {"choices"} or not isinstance(choices, list) or len(choices) < 2:
            raise OracleError(f"{where}: a set of values is written {{choices: [a, b, ...]}} with two or more values.")
        for value in choices:
            try:
                declared.coerce(param, value)
            except ParamError as exc:
                raise OracleError(f"{where}: {exc}") from None
        return
    if isinstance(declared, (Choice, Bool)):
        raise OracleError(f"{where}: {param} takes {declared.describe()}; search it with {{choices: [...]}}.")
    if not isinstance(declared, (Int, Float)):
        raise OracleError(f"{where}: {param} ({declared.describe()}) cannot be searched as a range; use {{choices: [...]}}.")
    ok_shape = isinstance(spec, list) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec[:2])
    if not ok_shape or (len(spec) == 3 and spec[2] != "log"):
        raise OracleError(f"{where}: a range is written [low, high] or [low, high, log], got {spec!r}.")
    low, high = spec[0], spec[1]
    if not low < high:
        raise OracleError(f"{where}: the range [{low}, {high}] is empty or a single point; a one-point space has nothing to search.")
    for value in (low, high):
        try:
            declared.coerce(param, int(value) if isinstance(declared, Int) else value)
        except ParamError as exc:
            raise OracleError(f"{where}: {exc}") from None
    if len(spec) == 3 and low <= 0:
        raise OracleError(f"{where}: a log range needs a positive low end, got {low}.")


# ---------------------------------------------------------------------------------------------
# Cells


def cell_utility(row: dict[str, Any]) -> float:
    """The defender's utility of one played match, the stealth gate binding: an attack that is
    not stealthy is a failed attack. Its model is one a user would reject, so the defender's
    utility is the honest model's CA (no backdoor), whatever the attack did to accuracy: ruining
    the model earns the attacker nothing."""
    return float(row["utility"]) if row["stealthy"] else float(row["honest"]["ca"])


@dataclass
class MatchGame:
    """A suite's game on real matches, played as tournaments and cached in the results store."""

    suite: Suite
    results: ResultsStore
    compute: Compute = CPU
    gpus_per_task: float | None = None
    play: Callable[[Suite], Any] | None = None  # how a sub-grid is played (default: a Ray tournament)
    name: str = ""
    _cells: dict[tuple[StrategySpec, StrategySpec], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.suite.name}+oracle"

    def _grid(self, defenders: list[StrategySpec], attackers: list[StrategySpec]) -> Suite:
        return dataclasses.replace(self.suite, name=self.name, attackers=tuple(attackers), defenders=tuple(defenders), not_applicable={})

    def fill(self, defenders: list[StrategySpec], attackers: list[StrategySpec]) -> None:
        """Play every missing match of defenders x attackers x seeds and cache the cells."""
        missing = [(d, a) for d in defenders for a in attackers if (d, a) not in self._cells]
        if not missing:
            return
        grid = self._grid(list(dict.fromkeys(d for d, _ in missing)), list(dict.fromkeys(a for _, a in missing)))
        self._adopt_suite_rows(grid)
        if self.play is not None:
            self.play(grid)
        else:
            from arena.tournament import run_tournament

            run_tournament(grid, self.results, device=self.compute.device, amp=self.compute.amp, gpus_per_task=self.gpus_per_task)
        rows = {r["key"]: r for r in self.results.rows(self.name)}
        for d, a in missing:
            values = []
            for match in self._grid([d], [a]).matches():
                row = rows.get(match.key)
                if row is None or row["status"] != "ok":
                    why = (row or {}).get("error") or "not played"
                    raise OracleError(f"the match {a.name} vs {d.name} (seed {match.attack.seed}) failed: {why}")
                values.append(cell_utility(row["result"]))
            self._cells[d, a] = float(np.mean(values))

    def _adopt_suite_rows(self, grid: Suite) -> None:
        """Matches the suite's own tournament already played, current and of this numerics class,
        are this game's rows too: copied, not played again."""
        numerics = compute_class(self.compute)
        theirs = self.results.finished(self.suite.name, numerics)
        wanted = [m for m in grid.matches() if m.key in theirs and m.key not in self.results.finished(self.name, numerics)] if theirs else []
        if wanted:
            rows = {r["key"]: r for r in self.results.rows(self.suite.name)}
            for match in wanted:
                self.results.put(self.name, match, "ok", result=rows[match.key]["result"])

    def utility(self, defender: StrategySpec, attacker: StrategySpec) -> float:
        self.fill([defender], [attacker])
        return self._cells[defender, attacker]


# ---------------------------------------------------------------------------------------------
# Oracles


@dataclass
class SearchLog:
    """What the oracles spent: trials, failed trials, and the trials' own seconds."""

    trials: int = 0
    failed: int = 0
    stopped: int = 0  # by ASHA, before the full training budget
    seconds: float = 0.0  # the trials' own work
    wall: float = 0.0  # the searches' wall time
    waiting: float = 0.0  # slot-seconds trials were due but not running (Tune's own time)
    resumed: int = 0  # searches read back or resumed from an earlier, interrupted run
    skipped: int = 0  # family searches the time budget skipped, or cut before any trial finished


def _support(strategies: Any, mixture: np.ndarray) -> list[tuple[StrategySpec, float]]:
    return [(s, float(p)) for s, p in zip(strategies, mixture) if p > SUPPORT]


def rungs(epochs: int) -> list[int]:
    """ASHA's training budgets for an attacker trial: a quarter, a half and all of the suite's epochs."""
    return sorted({max(1, epochs // 4), max(1, epochs // 2), epochs})


def seed_margin(per_seed: list[float], level: float = 0.9, replicates: int = 1000) -> float:
    """What the seeds cannot tell apart: half the width of the percentile bootstrap interval (at
    `level`, as the leaderboard's intervals) of the mean over seeds of a best response's
    expected utility. 0 with one seed (nothing to resample)."""
    values = np.asarray(per_seed, dtype=float)
    if len(values) < 2:
        return 0.0
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(replicates, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(hi - lo) / 2


def _match_utility(suite: Suite, attacker: StrategySpec, defender: StrategySpec, seed: int, epochs: int, compute: Compute, home: str) -> float:
    """One match played in the trial's own process (its models go to the shared artifact store)."""
    from arena.match import prepare, run_match
    from arena.store import ArtifactStore

    prepared = prepare(
        attacker.name,
        defender.name,
        attacker_params=attacker.param_dict,
        defender_params=defender.param_dict,
        dataset=suite.dataset,
        seed=seed,
        clean_budget=suite.clean_budget,
        epochs=epochs,
        architecture=suite.architecture,
    )
    return cell_utility(run_match(prepared, ArtifactStore(Path(home)), stealth_tolerance=suite.stealth_tolerance, compute=compute).to_json())


def _experiment_name(family: FamilySearch, index: int, **inputs: Any) -> str:
    """A search's experiment name: the family, the round, and a digest of everything the search
    depends on (the family's ranges, the opponents and their weights, the suite's task, the
    budgets, the strategies' code), so a re-run resumes exactly the searches it would repeat and
    nothing else."""
    from arena.provenance import code_fingerprint
    from arena.specs import digest

    cls = _registry(family.kind).get(family.name)
    opponents = inputs.get("opponents", [])
    fingerprints = {family.name: code_fingerprint(cls)} | {s.name: code_fingerprint(_registry("defender" if family.kind == "attacker" else "attacker").get(s.name)) for s, _ in opponents}
    payload = {
        "family": [family.kind, family.name, family.base, family.ranges],
        **{k: v for k, v in inputs.items() if k != "opponents"},
        "opponents": [[s.to_dict(), round(p, 9)] for s, p in opponents],
        "code": fingerprints,
    }
    return f"{family.kind}-{family.name.replace('/', '.')}-{index}-{digest(payload)[:12]}"


def make_oracles(
    game: MatchGame,
    attacker_families: list[FamilySearch],
    defender_families: list[FamilySearch],
    *,
    trials: int,
    seed: int,
    log: SearchLog,
    storage: Path,
    resources: dict[str, float],
    slots: int = 1,
    resume: bool = True,
    deadline: float | None = None,
) -> tuple[Callable[..., tuple[StrategySpec, float, float]], Callable[..., tuple[StrategySpec, float, float]]]:
    """The two oracles of `double_oracle`: each returns its best strategy, the defender's
    expected utility with it, and the seed margin of that utility. A side with no searched
    family answers with its best strategy among those already in the game (a search over the
    suite's own entries)."""
    from arena.search import NothingFinished, best_response
    from arena.store import arena_home

    suite, compute, home = game.suite, game.compute, str(arena_home())
    rounds = {"attacker": 0, "defender": 0}
    task = {"dataset": suite.dataset, "architecture": suite.architecture, "epochs": suite.epochs, "clean_budget": suite.clean_budget, "seeds": list(suite.seeds), "stealth": suite.stealth_tolerance}
    numerics = compute_class(compute)

    def search(family: FamilySearch, objective: Callable[..., Any], mode: str, budgets: list[int] | None, opponents: list[tuple[StrategySpec, float]]) -> tuple[StrategySpec, float, float] | None:
        index = rounds[family.kind]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            log.skipped += 1  # the time budget is spent: this family is not searched
            return None
        search_seed = seed + 1000 * index + sum(map(ord, family.name))  # per family and round, the same in every run
        name = _experiment_name(family, index, opponents=opponents, trials=trials, seed=search_seed, budgets=budgets, task=task, numerics=numerics)
        try:
            found = best_response(
                objective, family.domains(), mode=mode, trials=trials, seed=search_seed, resources=resources, storage_path=storage, name=name, budgets=budgets, slots=slots, resume=resume,
                time_budget=left,
            )
        except NothingFinished as nothing:  # every trial failed or was cut: the family offers nothing this round, the search goes on
            log.trials += nothing.trials
            log.failed += nothing.failed
            log.skipped += int(nothing.failed < nothing.trials)  # the time budget cut it before any trial finished
            return None
        log.trials += found.trials
        log.failed += found.failed
        log.stopped += found.stopped
        log.seconds += found.seconds
        log.wall += found.wall
        log.waiting += found.waiting
        log.resumed += int(found.restored)
        return family.spec(found.config), found.value, seed_margin(found.extras.get("per_seed", []))

    def expected(per_seed_of: Callable[[int], float]) -> Any:
        """Mean over seeds of the expected utility, with the per-seed values for the margin."""
        per_seed = [float(per_seed_of(s)) for s in suite.seeds]
        return float(np.mean(per_seed)), {"per_seed": per_seed}

    def defender_oracle(attackers: list[StrategySpec], mixture: np.ndarray) -> tuple[StrategySpec, float, float]:
        support = _support(attackers, mixture)
        known = list(dict.fromkeys(d for d, _ in game._cells))
        game.fill(known, [a for a, _ in support])
        best = max(known, key=lambda d: sum(p * game._cells[d, a] for a, p in support))
        options = [(best, sum(p * game._cells[best, a] for a, p in support), 0.0)]
        for family in defender_families:

            def objective(config: dict[str, Any], family: FamilySearch = family) -> Any:
                d = family.spec(config)
                return expected(lambda s: sum(p * _match_utility(suite, a, d, s, suite.epochs, compute, home) for a, p in support))

            if (found := search(family, objective, "max", None, support)) is not None:
                options.append(found)
        rounds["defender"] += 1
        return max(options, key=lambda o: o[1])

    def attacker_oracle(defenders: list[StrategySpec], mixture: np.ndarray) -> tuple[StrategySpec, float, float]:
        support = _support(defenders, mixture)
        known = list(dict.fromkeys(a for _, a in game._cells))
        game.fill([d for d, _ in support], known)
        best = min(known, key=lambda a: sum(p * game._cells[d, a] for d, p in support))
        options = [(best, sum(p * game._cells[d, best] for d, p in support), 0.0)]
        for family in attacker_families:

            def objective(config: dict[str, Any], epochs: int = suite.epochs, family: FamilySearch = family) -> Any:
                a = family.spec(config)
                return expected(lambda s: sum(p * _match_utility(suite, a, d, s, epochs, compute, home) for d, p in support))

            if (found := search(family, objective, "min", rungs(suite.epochs), support)) is not None:
                options.append(found)
        rounds["attacker"] += 1
        return min(options, key=lambda o: o[1])

    return defender_oracle, attacker_oracle


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class OracleReport:
    result: OracleResult[StrategySpec, StrategySpec]
    log: SearchLog
    seconds: float
    rounds: list[dict[str, Any]]
    out_of_time: bool = False  # the time budget ended the run


def label(kind: str, spec: StrategySpec) -> str:
    """The strategy's label as on the leaderboard: its name plus its non-default parameters."""
    from arena.leaderboard import strategy_label

    defaults = _registry(kind).get(spec.name).space.defaults()
    return strategy_label(spec.name, json.dumps(spec.param_dict), dict(defaults))


def check_oracle(suite: Suite, iterations: int, trials: int, search_alg: str, time_budget: float | None = None) -> tuple[list[FamilySearch], list[FamilySearch]]:
    """The budgets and the search block, checked: OracleError before any work."""
    if time_budget is not None and not time_budget > 0:
        raise OracleError(f"--time must be a positive number of seconds, got {time_budget}.")
    if iterations < 1:
        raise OracleError(f"--iterations must be at least 1, got {iterations}.")
    if trials < 1:
        raise OracleError(f"--trials must be at least 1, got {trials}.")
    if search_alg not in SEARCH_ALGORITHMS:
        raise OracleError(f"unknown search algorithm {search_alg!r}; known: {', '.join(SEARCH_ALGORITHMS)}.")
    if not suite.attackers or not suite.defenders:
        raise OracleError("the suite needs at least one attacker and one defender to start the game from.")
    return parse_search(suite.search, suite)


def play_oracle(
    suite: Suite,
    results: ResultsStore,
    *,
    iterations: int,
    trials: int,
    seed: int = 0,
    epsilon: float = 0.01,
    search_alg: str = "random",
    compute: Compute = CPU,
    gpus_per_task: float | None = None,
    storage: Path,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    play: Callable[[Suite], Any] | None = None,
    slots: int = 1,
    resume: bool = True,
    time_budget: float | None = None,
) -> OracleReport:
    """Run the double oracle on `suite` with real matches; every budget and the search block are
    checked before any match is played."""
    attacker_families, defender_families = check_oracle(suite, iterations, trials, search_alg, time_budget)
    for family in attacker_families + defender_families:
        family.domains()  # a range Tune cannot represent fails here
    start = time.perf_counter()
    deadline = None if time_budget is None else time.monotonic() + time_budget
    game = MatchGame(suite, results, compute, gpus_per_task, play)
    game.fill(list(suite.defenders), list(suite.attackers))
    log = SearchLog()
    resources = {"cpu": 1.0, **({"gpu": gpus_per_task} if gpus_per_task else {})}
    defender_oracle, attacker_oracle = make_oracles(
        game, attacker_families, defender_families, trials=trials, seed=seed, log=log, storage=storage, resources=resources, slots=slots, resume=resume, deadline=deadline
    )
    rounds: list[dict[str, Any]] = []

    def report(step: Iteration) -> None:
        entry = {
            "iteration": step.index,
            "size": list(step.size),
            "value": step.value,
            "defender_gain": step.defender_gain,
            "attacker_gain": step.attacker_gain,
            "defender_margin": step.defender_margin,
            "attacker_margin": step.attacker_margin,
            "best_defender": label("defender", step.best_defender),  # type: ignore[arg-type]
            "best_attacker": label("attacker", step.best_attacker),  # type: ignore[arg-type]
            "added": [label("defender", step.best_defender)] * step.added_defender + [label("attacker", step.best_attacker)] * step.added_attacker,  # type: ignore[arg-type]
            "trials": log.trials,
            "failed_trials": log.failed,
            "skipped_searches": log.skipped,
            "trial_seconds": round(log.seconds, 1),
            "cpu_seconds": round(log.seconds * resources["cpu"], 1),
            "seconds": round(time.perf_counter() - start, 1),
        }
        rounds.append(entry)
        if on_round is not None:
            on_round(entry)

    # a response joins only if it gains more than epsilon plus its own seed margin (seed_margin)
    result = double_oracle(list(suite.defenders), list(suite.attackers), game.utility, defender_oracle, attacker_oracle, epsilon=epsilon, max_iterations=iterations, on_iteration=report,
        out_of_time=None if deadline is None else lambda: time.monotonic() >= deadline,
    )
    spent = deadline is not None and time.monotonic() >= deadline
    return OracleReport(result, log, time.perf_counter() - start, rounds, out_of_time=spent and not result.converged)


def report_json(report: OracleReport) -> dict[str, Any]:
    result = report.result
    return {
        "value": result.solution.value,
        "exploitability": result.exploitability_bound,
        "converged": result.converged,
        "stopped_by": "convergence" if result.converged else ("time" if report.out_of_time else "iterations"),
        "exploitability_note": "an empirical bound: what the oracles' searches found against the final equilibrium, not a proof",
        "iterations": report.rounds,
        "defender": {label("defender", d): float(p) for d, p in zip(result.defenders, result.solution.defender)},
        "attacker": {label("attacker", a): float(p) for a, p in zip(result.attackers, result.solution.attacker)},
        "trials": report.log.trials,
        "failed_trials": report.log.failed,
        "stopped_trials": report.log.stopped,
        "trial_seconds": round(report.log.seconds, 1),
        "search_wall_seconds": round(report.log.wall, 1),
        "tune_waiting_seconds": round(report.log.waiting, 1),
        # Tune's own time per trial, against the trials' work (issue #13 asks under 5 %)
        "tune_overhead": round(report.log.waiting / report.log.seconds, 4) if report.log.seconds else None,
        "resumed_searches": report.log.resumed,
        "skipped_searches": report.log.skipped,
        "seconds": round(report.seconds, 1),
    }


def searched_families(suite: Suite) -> dict[str, list[str]]:
    """The families the suite's `search` block lets `arena oracle` search, per side."""
    attackers, defenders = parse_search(suite.search, suite)
    return {"attackers": [f.name for f in attackers], "defenders": [f.name for f in defenders]}


def adapted_game(report: OracleReport, suite: Suite, json_report: dict[str, Any]) -> dict[str, Any]:
    """The adapted game as a leaderboard publishes it beside the static one: every strategy with
    its full parameters and whether search added it, the cells, the three values (the suite as
    written; the attacker adapting against the suite's defenders; both adapting), and each
    defender's worst case before and after the attacker adapts."""
    from arena.game import solve_zero_sum

    result = report.result
    matrix = result.matrix
    static_d = [i for i, d in enumerate(result.defenders) if d in suite.defenders]
    static_a = [j for j, a in enumerate(result.attackers) if a in suite.attackers]
    d_labels = [label("defender", d) for d in result.defenders]
    a_labels = [label("attacker", a) for a in result.attackers]

    def strategies(kind: str, specs: list[StrategySpec], labels: list[str], mixture: np.ndarray, static: list[int]) -> list[dict[str, Any]]:
        return [
            {"label": lab, "name": s.name, "version": s.version, "params": s.param_dict, "adapted": i not in static, "probability": float(mixture[i])}
            for i, (s, lab) in enumerate(zip(specs, labels))
        ]

    worst = []
    for i in range(len(result.defenders)):
        before = float(matrix[i, static_a].min()) if i in static_d else None
        after = float(matrix[i].min())
        worst.append({"defender": d_labels[i], "adapted": i not in static_d, "worst_static": before, "worst_adapted": after, "fall": None if before is None else before - after,
                      "worst_attacker": a_labels[int(matrix[i].argmin())]})
    return {
        "suite": suite.name,
        "static_value": solve_zero_sum(matrix[np.ix_(static_d, static_a)]).value,
        "attacker_adapted_value": solve_zero_sum(matrix[static_d, :]).value,
        "value": result.solution.value,
        "exploitability": result.exploitability_bound,
        "converged": result.converged,
        "stopped_by": "convergence" if result.converged else ("time" if report.out_of_time else "iterations"),
        "exploitability_note": json_report["exploitability_note"],
        "searched": searched_families(suite),
        "defenders": strategies("defender", result.defenders, d_labels, result.solution.defender, static_d),
        "attackers": strategies("attacker", result.attackers, a_labels, result.solution.attacker, static_a),
        "matrix": {"rows": d_labels, "columns": a_labels, "utility": matrix.tolist()},
        "worst_case": worst,
        "iterations": report.rounds,
        "cost": {k: json_report[k] for k in ("trials", "failed_trials", "stopped_trials", "trial_seconds", "search_wall_seconds", "tune_overhead", "seconds")},
        "cells": "results store, suite " + f"{suite.name}+oracle" + " (`arena results " + f"{suite.name}+oracle`)",
    }


def load_adapted(suite: Suite, home: Path) -> dict[str, Any] | None:
    """The adapted game `arena oracle` last recorded for this suite, if it was grown from the
    suite's current strategies (a game grown from other strategies is not this suite's)."""
    path = home / "oracle" / suite.name / "game.json"
    if not path.is_file():
        return None
    game = json.loads(path.read_text())
    if "searched" not in game:  # recorded before arena kept the list: grown from the suite's search block
        with contextlib.suppress(OracleError):  # a block edited since into one the oracle refuses: the list stays unknown
            game["searched"] = searched_families(suite)
    static = {(e["name"], json.dumps(e["params"], sort_keys=True)) for side in ("defenders", "attackers") for e in game[side] if not e["adapted"]}
    mine = {(s.name, json.dumps(s.param_dict, sort_keys=True)) for s in (*suite.defenders, *suite.attackers)}
    return game if static == mine else None


def plot(report: OracleReport, path: Path) -> None:
    """Value and both gains per iteration (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["iteration"] for r in report.rounds]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, [r["value"] for r in report.rounds], marker="o", label="game value (defender utility)")
    ax.plot(xs, [max(r["defender_gain"], 0.0) for r in report.rounds], marker="^", label="defender best-response gain")
    ax.plot(xs, [max(r["attacker_gain"], 0.0) for r in report.rounds], marker="v", label="attacker best-response gain")
    ax.set_xlabel("iteration")
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    ax.set_title("double oracle" + (" (converged)" if report.result.converged else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

