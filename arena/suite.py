"""Suites: a YAML file naming the dataset, budgets, seeds and the attacker and defender grids.

    name: digits-smoke            # optional; defaults to the folder (or file) name
    dataset: digits
    architecture: badnets_cnn     # optional
    clean_budget: 0.05            # optional
    epochs: 50                    # optional: the attacker's training budget (default: the dataset's)
    seeds: [0, 1]
    attackers:
      - badnets                   # a name: its defaults
      - name: badnets             # fixed parameters
        params: {poison_rate: 0.05}
      - name: pruning_aware       # a grid: every point is a strategy of its own
        grid: {prune_accuracy_drop: [0.02, 0.04]}
    defenders: [none, fine_pruning]
    gpus_per_task: 0.25           # optional: a GPU share per match (0.25 packs four per card); default 0, CPUs
    search:                       # optional: what `arena oracle` may search (arena/adaptive.py);
      attackers: {badnets: {poison_rate: [0.01, 0.3]}}  # absent: every family's declared ranges
      defenders: [fine_pruning]   # a name alone: the ranges its strategy declares
    limits:                       # optional
      attack_timeout_s: 3600
      defense_timeout_s: 900
      retries: 1                  # re-runs after a system failure (a crashed worker), not a strategy's error
      max_matches: 5000           # at most MAX_MATCHES (100,000)

Everything is validated before anything runs: the file is UTF-8 YAML with no key given twice
(PyYAML would silently keep the last), every number is finite (NaN passes every range check),
every seed is in [0, 2**32), and the grid's size, attackers' points × defenders' points ×
seeds, is counted before any point is built and refused beyond `limits.max_matches`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arena.artifacts import honest_spec
from arena.capabilities import not_applicable_reason
from arena.data import clean_count, load_dataset
from arena.device import valid_gpu_share
from arena.errors import ArenaError, ParamError, UnknownNameError, UsageError
from arena.match import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_CLEAN_BUDGET,
    DEFAULT_STEALTH_TOLERANCE,
    task_for,
)
from arena.models import build_model
from arena.protocol import TaskSpec
from arena.registry import ATTACKERS, DEFENDERS, Registry
from arena.specs import AttackSpec, MatchSpec, StrategySpec, seed_problem

# The most matches any suite may hold, whatever its limits say: past it a grid is a slip (an
# axis too many) rather than a plan, and merely building its points would take minutes and
# gigabytes before the first match runs.
MAX_MATCHES = 100_000

TOP_KEYS = {"name", "dataset", "architecture", "clean_budget", "epochs", "seeds", "attackers", "defenders", "limits", "stealth_tolerance", "gpus_per_task", "search"}
LIMIT_KEYS = {"attack_timeout_s", "defense_timeout_s", "retries", "max_matches"}


class SuiteError(UsageError):
    """A suite file that cannot be run as written."""


@dataclass(frozen=True)
class Limits:
    attack_timeout_s: float = 3600.0
    defense_timeout_s: float = 900.0
    retries: int = 1
    max_matches: int = 5000


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    architecture: str
    clean_budget: float
    epochs: int
    seeds: tuple[int, ...]
    attackers: tuple[StrategySpec, ...]
    defenders: tuple[StrategySpec, ...]
    limits: Limits = field(default_factory=Limits)
    stealth_tolerance: float = DEFAULT_STEALTH_TOLERANCE
    gpus_per_task: float = 0.0  # where the grid runs, not what it computes: not part of any spec
    # what `arena oracle` may search, per strategy family (checked by arena.adaptive.parse_search)
    search: Any = field(default=None, compare=False, hash=False)
    path: Path | None = None
    # (attacker, defender) pairs whose defense cannot act on the attacker's published model, and
    # why: n/a cells, decided here before anything runs (docs/design.md §10)
    not_applicable: dict[tuple[StrategySpec, StrategySpec], str] = field(default_factory=dict, compare=False, hash=False)

    def attack_specs(self) -> list[AttackSpec]:
        return [AttackSpec(a, self.dataset, self.architecture, self.epochs, self.clean_budget, seed) for seed in self.seeds for a in self.attackers]

    def matches(self) -> list[MatchSpec]:
        return [MatchSpec(attack, d) for attack in self.attack_specs() for d in self.defenders]

    def honest_specs(self) -> list[AttackSpec]:
        return list(dict.fromkeys(honest_spec(a) for a in self.attack_specs()))


@dataclass(frozen=True)
class _Entry:
    """One attackers/defenders entry of a suite, its shape checked, its grid not yet expanded."""

    at: str  # where it is in the file, e.g. attackers[2]
    name: Any
    params: dict[str, Any]
    grid: dict[str, list[Any]]

    @property
    def points(self) -> int:
        return math.prod(len(values) for values in self.grid.values())


def _entries(entries: Any, where: str) -> list[_Entry]:
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{where} must be a non-empty list of strategy names or {{name, params, grid}} entries.")
    out = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise SuiteError(f"{at} must be a strategy name or a mapping with a `name` key, got {entry!r}.")
        unknown = set(entry) - {"name", "params", "grid"}
        if unknown:
            raise SuiteError(f"{at} has unknown keys {sorted(map(str, unknown))}; allowed: name, params, grid.")
        params = entry.get("params") or {}
        grid = entry.get("grid") or {}
        if not isinstance(params, dict) or not isinstance(grid, dict):
            raise SuiteError(f"{at}: `params` and `grid` must be mappings.")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SuiteError(f"{at}: grid values of {key!r} must be a non-empty list, got {values!r}.")
        out.append(_Entry(at, entry["name"], params, grid))
    return out


def _expand_entries(entries: list[_Entry], registry: Registry) -> tuple[StrategySpec, ...]:
    specs: list[StrategySpec] = []
    for entry in entries:
        at, name, params, grid = entry.at, entry.name, entry.params, entry.grid
        try:
            cls = registry.get(str(name))
        except UnknownNameError as exc:
            raise SuiteError(f"{at}: {exc}") from None
        keys = list(grid)
        for point in itertools.product(*(grid[k] for k in keys)):
            values = {**params, **dict(zip(keys, point))}
            try:
                instance = cls(**values)
            except ArenaError as exc:
                raise SuiteError(f"{at} ({name}): {exc}") from None
            specs.append(StrategySpec.of(str(name), cls.version, instance.spec_params))
    return tuple(dict.fromkeys(specs))  # a grid point listed twice is one strategy


def _finite(value: Any, what: str) -> float:
    """A finite number of the suite; NaN and the infinities are refused (every comparison with
    NaN is false, so a NaN timeout or tolerance would pass its range check and mean nothing)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise SuiteError(f"{what} must be a finite number, got {value!r}.")
    return number


def _integer(value: Any, what: str) -> int:
    """A whole number of the suite (2.0 is 2; 2.5 is refused, not truncated)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _finite(value, what)
    if not number.is_integer():
        raise SuiteError(f"{what} must be a whole number, got {value!r}.")
    return int(number)


def parse_suite(data: Any, name: str, path: Path | None = None) -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(f"a suite must be a YAML mapping, got {type(data).__name__}.")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SuiteError(f"unknown suite keys {sorted(unknown)}; allowed: {', '.join(sorted(TOP_KEYS))}.")
    for required in ("dataset", "seeds", "attackers", "defenders"):
        if required not in data:
            raise SuiteError(f"the suite needs `{required}`.")
    suite_name = data.get("name", name)
    if not isinstance(suite_name, str) or not suite_name.strip() or suite_name in (".", "..") or any(c in suite_name for c in "/\\\0"):
        # the name is a folder name under ARENA_HOME (the oracle's searches) and a results key
        raise SuiteError(f"`name` must be a non-empty text without / or \\ (it names folders), got {suite_name!r}.")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SuiteError(f"`seeds` must be a non-empty list of integers, got {seeds!r}.")
    for seed in seeds:
        if (problem := seed_problem(seed)) is not None:
            raise SuiteError(f"`seeds`: {problem}.")
    if len(set(seeds)) != len(seeds):
        raise SuiteError(f"`seeds` repeats a seed: {seeds!r}.")
    limits_raw = data.get("limits") or {}
    if not isinstance(limits_raw, dict) or set(limits_raw) - LIMIT_KEYS:
        raise SuiteError(f"`limits` takes only {', '.join(sorted(LIMIT_KEYS))}.")
    default = Limits()
    limits = Limits(
        attack_timeout_s=_finite(limits_raw.get("attack_timeout_s", default.attack_timeout_s), "`limits.attack_timeout_s`"),
        defense_timeout_s=_finite(limits_raw.get("defense_timeout_s", default.defense_timeout_s), "`limits.defense_timeout_s`"),
        retries=_integer(limits_raw.get("retries", default.retries), "`limits.retries`"),
        max_matches=_integer(limits_raw.get("max_matches", default.max_matches), "`limits.max_matches`"),
    )
    if limits.attack_timeout_s <= 0 or limits.defense_timeout_s <= 0 or limits.retries < 0 or not 1 <= limits.max_matches <= MAX_MATCHES:
        raise SuiteError(f"`limits`: timeouts must be positive, retries non-negative, max_matches at least 1 and at most {MAX_MATCHES:,}.")
    clean_budget = _finite(data.get("clean_budget", DEFAULT_CLEAN_BUDGET), "`clean_budget`")
    tolerance = _finite(data.get("stealth_tolerance", DEFAULT_STEALTH_TOLERANCE), "`stealth_tolerance`")
    gpus_per_task = _finite(data.get("gpus_per_task", 0.0), "`gpus_per_task`")
    epochs = None if data.get("epochs") is None else _integer(data["epochs"], "`epochs`")
    if not 0.0 < clean_budget <= 0.5:
        raise SuiteError(f"`clean_budget` {clean_budget} must be a fraction in (0, 0.5].")
    if not 0.0 <= tolerance <= 1.0:
        raise SuiteError(f"`stealth_tolerance` {tolerance} must be an accuracy gap in [0, 1].")
    if not valid_gpu_share(gpus_per_task):
        raise SuiteError(f"`gpus_per_task` {gpus_per_task:g} must be a share of one GPU in [0, 1] (0.25 packs four matches per card) or a whole number of GPUs.")
    dataset = str(data["dataset"])
    architecture = str(data.get("architecture", DEFAULT_ARCHITECTURE))
    try:
        task = task_for(dataset, architecture, epochs)
        build_model(task)
    except (UnknownNameError, ParamError) as exc:
        raise SuiteError(str(exc)) from None
    attacker_entries, defender_entries = _entries(data["attackers"], "attackers"), _entries(data["defenders"], "defenders")
    # counted before a single point is built: a grid of a billion points is refused at once
    attacker_points, defender_points = sum(e.points for e in attacker_entries), sum(e.points for e in defender_entries)
    n = attacker_points * defender_points * len(seeds)
    if n > limits.max_matches:
        raise SuiteError(
            f"the suite expands to {n:,} matches ({attacker_points:,} attacker points × {defender_points:,} defender points × {len(seeds)} seeds), "
            f"more than limits.max_matches = {limits.max_matches:,}; shrink the grids, or raise the limit (to at most {MAX_MATCHES:,}) if you mean it."
        )
    attackers = _expand_entries(attacker_entries, ATTACKERS)
    defenders = _expand_entries(defender_entries, DEFENDERS)
    for group, registry in ((attackers, ATTACKERS), (defenders, DEFENDERS)):
        for spec in group:
            try:
                registry.get(spec.name)(**spec.param_dict).check(task)
            except ParamError as exc:
                raise SuiteError(f"{spec.name} {spec.param_dict}: {exc}") from None
    # a defense the clean budget cannot feed is refused now, not after every model has trained
    clean = clean_count(load_dataset(dataset), clean_budget)
    for spec in defenders:
        needed = DEFENDERS.get(spec.name).min_clean
        if clean < needed:
            raise SuiteError(
                f"defender {spec.name!r} needs at least {needed} clean samples, but `clean_budget` {clean_budget:g} gives {clean} of {dataset!r}'s training split; "
                "raise `clean_budget` or drop the defender."
            )
    not_applicable = inapplicable_pairs(task, attackers, defenders)
    return Suite(
        name=suite_name,
        dataset=dataset,
        architecture=architecture,
        clean_budget=clean_budget,
        epochs=task.epochs,
        seeds=tuple(seeds),
        attackers=attackers,
        defenders=defenders,
        limits=limits,
        stealth_tolerance=tolerance,
        gpus_per_task=gpus_per_task,
        search=data.get("search"),
        path=path,
        not_applicable=not_applicable,
    )


def inapplicable_pairs(task: TaskSpec, attackers: tuple[StrategySpec, ...], defenders: tuple[StrategySpec, ...]) -> dict[tuple[StrategySpec, StrategySpec], str]:
    """Check every strategy's declared capabilities against the models it would meet: an attacker
    that cannot train the task's architecture makes the suite invalid; a defender that cannot act
    on an attacker's published architecture makes that pair an n/a cell."""
    base = build_model(task)
    pairs: dict[tuple[StrategySpec, StrategySpec], str] = {}
    for a in attackers:
        attacker = ATTACKERS.get(a.name)(**a.param_dict)
        if (reason := not_applicable_reason(attacker, base)) is not None:
            raise SuiteError(f"{reason}: the suite's architecture {task.architecture!r} cannot carry this attack; drop it or choose an architecture it supports.")
        published = build_model(dataclasses.replace(task, architecture=attacker.published_architecture(task)))
        for d in defenders:
            if (reason := not_applicable_reason(DEFENDERS.get(d.name)(**d.param_dict), published)) is not None:
                pairs[(a, d)] = reason
    return pairs


def with_strategies(suite: Suite, names: list[str]) -> Suite:
    """The suite plus registered strategies (defaults) named on the command line, e.g. a plugin."""
    attackers, defenders = list(suite.attackers), list(suite.defenders)
    registry: Registry[Any]
    for name in names:
        if name in ATTACKERS.names():
            registry, group = ATTACKERS, attackers
        elif name in DEFENDERS.names():
            registry, group = DEFENDERS, defenders
        else:
            raise SuiteError(str(UnknownNameError("strategy", name, ATTACKERS.names() + DEFENDERS.names())))
        cls = registry.get(name)
        spec = StrategySpec.of(name, cls.version, cls().spec_params)
        if spec not in group:
            group.append(spec)
    task = task_for(suite.dataset, suite.architecture, suite.epochs)
    return dataclasses.replace(suite, attackers=tuple(attackers), defenders=tuple(defenders), not_applicable=inapplicable_pairs(task, tuple(attackers), tuple(defenders)))


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; a folder means its `suite.yaml`."""
    p = Path(path)
    if p.is_dir():
        p = p / "suite.yaml"
    if not p.exists():
        raise SuiteError(f"no suite file at {p}.")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SuiteError(f"cannot read the suite file {p} ({exc.strerror or exc}).") from None
    data = read_suite_yaml(raw, str(p))
    default_name = p.absolute().parent.name if p.name == "suite.yaml" else p.stem
    return parse_suite(data, default_name, p)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error, not silently the
    last one: a suite that says `seeds` twice means one of them, and we cannot know which."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise SuiteError(f"the key {key!r} is given twice in one mapping (lines {seen[key]} and {line}); YAML would silently keep the last. Keep one.")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class refuses it, with its line
                break
        return super().construct_mapping(node, deep=deep)


def read_suite_yaml(raw: bytes, where: str) -> Any:
    """The data of a suite file's bytes: UTF-8 YAML, no key given twice; a SuiteError otherwise,
    naming the file (`where`) and the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError(f"{where} is not UTF-8 text: byte {exc.start} (line {line}) is {raw[exc.start : exc.start + 1]!r}. Save it as UTF-8.") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects are built
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SuiteError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}.") from None


def find_suite(name: str | Path) -> Path:
    """The suite file a user means: a YAML path, a folder holding suite.yaml, or the name of a
    folder under ./leaderboards/ (the published suites)."""
    path = Path(name)
    if path.is_dir():
        path = path / "suite.yaml"
    if path.exists():
        return path
    candidate = Path("leaderboards") / str(name) / "suite.yaml"
    if candidate.exists():
        return candidate
    raise SuiteError(f"no suite {str(name)!r}: give a suite.yaml path, or the name of a folder under ./leaderboards/ holding one.")


def suite_frame(suite: Suite, results: Any) -> Any:
    """The rows of `results` that belong to the suite as it is now (a row of a strategy since
    removed from the suite file stays in the database but not on the board)."""
    frame = results.frame(suite.name)
    keys = {m.key for m in suite.matches()}
    return frame[frame.match_key.isin(keys)] if not frame.empty else frame
