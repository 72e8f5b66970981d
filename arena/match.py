"""One match: attacked model (trained once, then from the store), defense, trusted evaluation.

The runner is the evaluator of DESIGN.md §1: it alone holds the triggers and the test split.
The defender gets the published weights rebuilt from the artifact store (what a user who
downloaded the model would hold), its clean split, the task spec and a generator; nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import arena
from arena import metrics
from arena.data import PlayerSplits, load_dataset, player_splits
from arena.errors import ArtifactIntegrityError, ParamError
from arena.models import build_model
from arena.protocol import (
    InputFilter,
    ProgressFn,
    Split,
    TaskSpec,
    Trigger,
    Verdict,
    no_progress,
)
from arena.registry import ATTACKERS, DEFENDERS
from arena.specs import AttackSpec, MatchSpec, StrategySpec, derive_seed
from arena.store import ArtifactStore
from arena.strategy import Attacker, Defender
from arena.training import predict
from arena.triggers import trigger_from_dict

DEFAULT_ARCHITECTURE = "badnets_cnn"
DEFAULT_CLEAN_BUDGET = 0.05
DEFAULT_STEALTH_TOLERANCE = 0.03


@dataclass(frozen=True)
class Evaluation:
    """The evaluator's view of one deployed system (model plus optional filter) on the test split."""

    ca: float
    asr: float
    asr_per_trigger: dict[str, float]
    frr: float | None = None  # filter's false rejection rate on clean test inputs
    far_per_trigger: dict[str, float] | None = None  # filter's false acceptance on triggered inputs

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ca": self.ca, "asr": self.asr, "asr_per_trigger": dict(self.asr_per_trigger)}
        if self.frr is not None:
            out["frr"] = self.frr
            out["far_per_trigger"] = dict(self.far_per_trigger or {})
        return out


def evaluate(model: nn.Module, triggers: list[Trigger], test: Split, input_filter: InputFilter | None = None) -> Evaluation:
    accepted = None if input_filter is None else input_filter.accept(model, test.x).bool()
    ca = metrics.clean_accuracy(predict(model, test.x), test.y, accepted)
    per_trigger: dict[str, float] = {}
    far: dict[str, float] = {}
    for trigger in triggers:
        x_bad = trigger.apply(test.x)
        bad_accepted = None if input_filter is None else input_filter.accept(model, x_bad).bool()
        per_trigger[trigger.name] = metrics.attack_success_rate(predict(model, x_bad), test.y, trigger.goal, bad_accepted, clean_acc=ca)
        if bad_accepted is not None:
            eligible = trigger.goal.eligible(test.y) if trigger.goal.kind != "untargeted" else torch.ones_like(test.y, dtype=torch.bool)
            far[trigger.name] = metrics.false_acceptance_rate(bad_accepted[eligible])
    frr = None if accepted is None else metrics.false_rejection_rate(accepted)
    attacks = {name: v for name, v in per_trigger.items() if name not in {t.name for t in triggers if t.probe}}
    return Evaluation(ca, metrics.headline_asr(attacks), per_trigger, frr, far if accepted is not None else None)


@dataclass
class MatchResult:
    spec: MatchSpec
    honest_ca: float
    attacked: Evaluation
    defended: Evaluation
    verdict: Verdict | None
    stealthy: bool
    cached: bool
    seconds_attack: float  # what training the attacked model cost (recorded when it was trained)
    seconds_defense: float
    seconds_total: float  # wall time of this run, cache hits included
    clean_samples: int
    artifact_sha256: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def utility(self) -> float:
        return metrics.defender_utility(self.defended.ca, self.defended.asr)

    def to_json(self) -> dict[str, Any]:
        attack = self.spec.attack
        return {
            "attacker": attack.attacker.to_dict(),
            "defender": self.spec.defender.to_dict(),
            "dataset": attack.dataset,
            "architecture": attack.architecture,
            "seed": attack.seed,
            "epochs": attack.epochs,
            "clean_budget": attack.clean_budget,
            "clean_samples": self.clean_samples,
            "match_key": self.spec.key,
            "honest": {"ca": self.honest_ca},
            "attacked": self.attacked.to_dict(),
            "defended": {**self.defended.to_dict(), "verdict": None if self.verdict is None else self.verdict.to_dict()},
            "utility": self.utility,
            "stealthy": self.stealthy,
            "cached": self.cached,
            "seconds": {"attack": self.seconds_attack, "defense": self.seconds_defense, "total": self.seconds_total},
            "artifact_sha256": self.artifact_sha256,
            "provenance": self.provenance,
        }


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the arena source tree, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(arena.__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def task_for(dataset: str, architecture: str, epochs: int | None) -> TaskSpec:
    data = load_dataset(dataset)
    budget = data.epochs if epochs is None else epochs
    if budget < 1:
        raise ParamError(f"the training budget must be at least 1 epoch, got {budget}.")
    return TaskSpec(dataset, data.num_classes, data.input_shape, architecture, budget)


@dataclass(frozen=True)
class Prepared:
    """A match resolved and validated: every name known, every parameter in its space."""

    spec: MatchSpec
    task: TaskSpec
    attacker: Attacker
    defender: Defender


def prepare(
    attacker: str,
    defender: str,
    *,
    attacker_params: dict[str, Any] | None = None,
    defender_params: dict[str, Any] | None = None,
    dataset: str = "digits",
    seed: int = 0,
    clean_budget: float = DEFAULT_CLEAN_BUDGET,
    epochs: int | None = None,
    architecture: str = DEFAULT_ARCHITECTURE,
) -> Prepared:
    """Resolve names and validate every parameter before any training starts."""
    attacker_cls = ATTACKERS.get(attacker)
    defender_cls = DEFENDERS.get(defender)
    a = attacker_cls(**(attacker_params or {}))
    d = defender_cls(**(defender_params or {}))
    task = task_for(dataset, architecture, epochs)
    build_model(task)  # unknown architecture: an error now, not after training
    a.check_task(task)
    d.check_task(task)
    if not 0.0 < clean_budget <= 0.5:
        raise ParamError(f"clean budget {clean_budget!r} must be a fraction in (0, 0.5] of the training split.")
    attack = AttackSpec(StrategySpec.of(attacker, a.version, a.params), dataset, architecture, task.epochs, clean_budget, seed)
    return Prepared(MatchSpec(attack, StrategySpec.of(defender, d.version, d.params)), task, a, d)


def _prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
    return lambda stage, done, total: progress(f"{prefix}: {stage}", done, total)


def obtain_attacked(
    attack: AttackSpec,
    attacker: Attacker,
    task: TaskSpec,
    splits: PlayerSplits,
    store: ArtifactStore,
    progress: ProgressFn = no_progress,
    label: str = "attack",
) -> tuple[nn.Module, list[Trigger], dict[str, Any], bool]:
    """The attacked model of `attack`: from the store when there, else trained and stored.

    Returns (model as loaded back from the store, triggers, manifest, cached).
    """
    loaded = store.load(attack.key, published_builder(task))
    if loaded is not None:
        model, manifest = loaded
        return model, _manifest_triggers(manifest, store.manifest_path(attack.key)), manifest, True
    generator = torch.Generator().manual_seed(derive_seed(attack.seed, "attack", attack.key))
    start = time.perf_counter()
    out = attacker.attack(task, splits.attacker, generator, _prefixed(progress, label))
    seconds = time.perf_counter() - start
    manifest = {
        "spec": attack.to_dict(),
        "task": task.to_dict(),
        "triggers": [t.to_dict() for t in out.triggers],
        "published_architecture": attacker.published_architecture(task),
        "seconds_train": seconds,
        "arena_version": arena.__version__,
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    store.save(attack.key, out.model, manifest)
    # Read it back: the defender gets exactly what a downloader of the published file gets.
    model, manifest = store.load(attack.key, published_builder(task))  # type: ignore[misc]
    return model, _manifest_triggers(manifest, store.manifest_path(attack.key)), manifest, False


def published_builder(task: TaskSpec) -> Callable[[dict[str, Any]], nn.Module]:
    """Builds the architecture an attacked model's manifest says was published (the task's own,
    or a wrapper around it declared by an attacker that changes the architecture)."""
    return lambda manifest: build_model(dataclasses.replace(task, architecture=manifest.get("published_architecture", task.architecture)))


def _manifest_triggers(manifest: dict[str, Any], path: Path) -> list[Trigger]:
    """The triggers an attacked model's manifest records; a manifest without them is refused."""
    try:
        float(manifest["seconds_train"])
        return [trigger_from_dict(t) for t in manifest["triggers"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactIntegrityError(f"The manifest {path} lacks a valid attack record ({exc!r}); refused. Remove it to have arena retrain the model.") from None


def honest_spec(attack: AttackSpec) -> AttackSpec:
    """The honest baseline for the same dataset, budget and seed (attacker `none`, its defaults)."""
    honest = ATTACKERS.get("none")()
    return AttackSpec(StrategySpec.of("none", honest.version, honest.params), attack.dataset, attack.architecture, attack.epochs, attack.clean_budget, attack.seed)


def instantiate_attacker(spec: StrategySpec) -> Attacker:
    return _instantiate(ATTACKERS.get(spec.name), spec)


def instantiate_defender(spec: StrategySpec) -> Defender:
    return _instantiate(DEFENDERS.get(spec.name), spec)


def _instantiate(cls: type, spec: StrategySpec) -> Any:
    if cls.version != spec.version:
        raise ParamError(f"{cls.kind} {spec.name!r} is at version {cls.version}, but the spec asks for version {spec.version}.")
    return cls(**spec.param_dict)


@dataclass(frozen=True)
class AttackRecord:
    """The evaluator's summary of one attacked model: small, picklable, enough to defend and score it."""

    spec: AttackSpec
    sha256: str
    triggers: tuple[dict[str, Any], ...]
    evaluation: Evaluation  # the attacked model, undefended, on the test split
    seconds_train: float
    cached: bool


def attack_stage(attack: AttackSpec, store: ArtifactStore, progress: ProgressFn = no_progress, label: str = "attack") -> AttackRecord:
    """Train (or take from the store) the attacked model of `attack` and evaluate it undefended."""
    task = task_for(attack.dataset, attack.architecture, attack.epochs)
    splits = player_splits(load_dataset(attack.dataset), attack.clean_budget)
    model, triggers, manifest, cached = obtain_attacked(attack, instantiate_attacker(attack.attacker), task, splits, store, progress, label)
    return AttackRecord(attack, manifest["sha256"], tuple(manifest["triggers"]), evaluate(model, triggers, splits.test), float(manifest["seconds_train"]), cached)


def defense_stage(
    spec: MatchSpec,
    attacked: AttackRecord,
    honest: AttackRecord,
    store: ArtifactStore,
    progress: ProgressFn = no_progress,
    stealth_tolerance: float = DEFAULT_STEALTH_TOLERANCE,
) -> MatchResult:
    """Hand the published model to the defender and score the defended system."""
    start = time.perf_counter()
    attack = spec.attack
    if attacked.spec != attack or honest.spec != honest_spec(attack):
        raise ValueError("defense_stage got attack records of another match")
    task = task_for(attack.dataset, attack.architecture, attack.epochs)
    splits = player_splits(load_dataset(attack.dataset), attack.clean_budget)
    loaded = store.load(attack.key, published_builder(task))
    if loaded is None:
        raise ArtifactIntegrityError(f"the attacked model {attack.key[:12]} is not in the store at {store.root}")
    model, manifest = loaded
    if manifest["sha256"] != attacked.sha256:
        raise ArtifactIntegrityError(f"the attacked model {attack.key[:12]} changed in the store since it was evaluated; refused.")
    triggers = [trigger_from_dict(t) for t in attacked.triggers]
    defender = instantiate_defender(spec.defender)

    generator = torch.Generator().manual_seed(derive_seed(attack.seed, "defense", spec.key))
    t0 = time.perf_counter()
    outcome = defender.defend(model, task, splits.clean, generator, _prefixed(progress, "defense"))
    seconds_defense = time.perf_counter() - t0
    deployed = outcome.model if outcome.model is not None else model
    defended = evaluate(deployed, triggers, splits.test, outcome.input_filter)
    honest_ca = honest.evaluation.ca
    return MatchResult(
        spec=spec,
        honest_ca=honest_ca,
        attacked=attacked.evaluation,
        defended=defended,
        verdict=outcome.verdict,
        stealthy=attacked.evaluation.ca >= honest_ca - stealth_tolerance,
        cached=attacked.cached,
        seconds_attack=attacked.seconds_train,
        seconds_defense=seconds_defense,
        seconds_total=time.perf_counter() - start,
        clean_samples=len(splits.clean),
        artifact_sha256=attacked.sha256,
        provenance={"arena_version": arena.__version__, "git_commit": git_commit(), "torch": torch.__version__},
    )


def run_match(
    prepared: Prepared,
    store: ArtifactStore | None = None,
    progress: ProgressFn = no_progress,
    stealth_tolerance: float = DEFAULT_STEALTH_TOLERANCE,
) -> MatchResult:
    """One match in this process: honest baseline, attacked model, defense, evaluation."""
    start = time.perf_counter()
    store = store or ArtifactStore()
    spec = prepared.spec
    honest = attack_stage(honest_spec(spec.attack), store, progress, label="honest")
    attacked = honest if spec.attack == honest.spec else attack_stage(spec.attack, store, progress)
    result = defense_stage(spec, attacked, honest, store, progress, stealth_tolerance)
    result.seconds_total = time.perf_counter() - start
    return result
