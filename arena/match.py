"""One match: attacked model (trained once, then from the store), defense, trusted evaluation.

The runner is the evaluator of docs/design.md §1: it alone holds the triggers and the test split.
The defender gets the published weights rebuilt from the artifact store (what a user who
downloaded the model would hold), its clean split, the task spec and a generator; nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue as queue_module
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import arena
from arena import metrics
from arena.artifacts import (
    honest_spec,
    instantiate_attacker,
    instantiate_defender,
    is_baseline,
    load_returned_weights,
    needs_training,
    obtain_attacked,
    obtain_fallback,
    prefixed,
    published_builder,
)
from arena.capabilities import not_applicable_reason
from arena.data import clean_count, load_dataset, player_splits
from arena.device import CPU, Compute, store_key, using
from arena.errors import ArtifactIntegrityError, ParamError
from arena.evaluator import Evaluation, ServedModel, deployed_system, evaluate, trigger_targets
from arena.models import build_model
from arena.protocol import (
    DefenseOutcome,
    ProgressFn,
    TaskSpec,
    Verdict,
    no_progress,
)
from arena.provenance import code_fingerprint, git_commit, numerics, pinned
from arena.registry import ATTACKERS, DEFENDERS
from arena.sandbox import Sandbox, SandboxedFilter, StrategyRef, verdict_from
from arena.specs import AttackSpec, MatchSpec, StrategySpec, derive_seed, digest
from arena.store import ArtifactStore
from arena.strategy import Attacker, Defender, check_logits
from arena.triggers import TRIGGERS, trigger_from_dict

DEFAULT_ARCHITECTURE = "badnets_cnn"
DEFAULT_CLEAN_BUDGET = 0.05
DEFAULT_STEALTH_TOLERANCE = 0.03
# A child process costs about 4 s to start (importing torch and arena): below this much training
# (samples x epochs) one process trains both models sooner. digits: 1.7k x 50 = 85k (cold match
# 15.2 s in one process, 17.8 s side by side, best of 3 in benchmarks/results/reproducibility-timing.jsonl);
# Fashion-MNIST: 57k x 8 = 456k.
SIDE_BY_SIDE_MIN_SAMPLE_EPOCHS = 200_000


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
    deployed: str = "published"  # what the user runs: "published", "repaired" or "fallback" (verdict rule), or "n/a"
    not_applicable: str | None = None  # why the defense could not act on this model (an n/a cell): it was not run
    fallback_sha256: str | None = None
    targets: list[int] = field(default_factory=list)  # the attack's goal labels, for detection rates
    fingerprints: dict[str, str] = field(default_factory=dict)  # strategy -> code fingerprint
    numerics: dict[str, Any] = field(default_factory=dict)
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
            "attacked": {**self.attacked.to_dict(), "targets": list(self.targets)},
            "defended": {
                **self.defended.to_dict(),
                "verdict": None if self.verdict is None else self.verdict.to_dict(),
                "deployed": self.deployed,
                "fallback_sha256": self.fallback_sha256,
                "not_applicable": self.not_applicable,
            },
            "utility": self.utility,
            "stealthy": self.stealthy,
            "cached": self.cached,
            "seconds": {"attack": self.seconds_attack, "defense": self.seconds_defense, "total": self.seconds_total},
            "artifact_sha256": self.artifact_sha256,
            "fingerprints": dict(self.fingerprints),
            "numerics": dict(self.numerics),
            "provenance": self.provenance,
        }


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
    require_applicable: bool = False,
) -> Prepared:
    """Resolve names and validate every parameter before any training starts. With
    `require_applicable`, a defender that cannot act on the attacker's published architecture is
    an error (`arena match`); without, the match is an n/a cell, as in a suite."""
    attacker_cls = ATTACKERS.get(attacker)
    defender_cls = DEFENDERS.get(defender)
    a = attacker_cls(**(attacker_params or {}))
    d = defender_cls(**(defender_params or {}))
    task = task_for(dataset, architecture, epochs)
    if (reason := not_applicable_reason(a, build_model(task))) is not None:  # an unknown architecture fails here too
        raise ParamError(f"{reason}: the architecture {architecture!r} cannot carry this attack.")
    a.check(task)
    d.check(task)
    if not 0.0 < clean_budget <= 0.5:
        raise ParamError(f"clean budget {clean_budget!r} must be a fraction in (0, 0.5] of the training split.")
    data = load_dataset(dataset)
    if (clean := clean_count(data, clean_budget)) < d.min_clean:  # said before any training, not after it
        raise ParamError(
            f"defender {defender!r} needs at least {d.min_clean} clean samples, but a clean budget of {clean_budget:g} gives {clean} of the "
            f"{len(data.train)} training samples of {dataset!r}; raise the clean budget to at least {d.min_clean / len(data.train):.4f}."
        )
    if require_applicable:
        published = build_model(dataclasses.replace(task, architecture=a.published_architecture(task)))
        if (reason := not_applicable_reason(d, published)) is not None:
            raise ParamError(f"{reason}: this pair is not applicable on the architecture {architecture!r} (in a suite it is an n/a cell); choose an architecture that has it.")
    attack = AttackSpec(StrategySpec.of(attacker, a.version, a.spec_params), dataset, architecture, task.epochs, clean_budget, seed)
    return Prepared(MatchSpec(attack, StrategySpec.of(defender, d.version, d.spec_params)), task, a, d)


@dataclass(frozen=True)
class AttackRecord:
    """The evaluator's summary of one attacked model: small, picklable, enough to defend and score it."""

    spec: AttackSpec
    sha256: str
    triggers: tuple[dict[str, Any], ...]
    evaluation: Evaluation  # the attacked model, undefended, on the test split
    seconds_train: float
    cached: bool
    fingerprint: str = "unknown"  # the attacker's code
    numerics: dict[str, Any] = field(default_factory=dict)  # what it was trained and evaluated under


def attack_stage(attack: AttackSpec, store: ArtifactStore, progress: ProgressFn = no_progress, label: str = "attack", compute: Compute = CPU) -> AttackRecord:
    """Train (or take from the store) the attacked model of `attack` and evaluate it undefended,
    on `compute`'s device (the splits are moved there once)."""
    with pinned(), using(compute):
        task = task_for(attack.dataset, attack.architecture, attack.epochs)
        splits = player_splits(load_dataset(attack.dataset), attack.clean_budget).to(compute.torch_device)
        model, triggers, manifest, cached = obtain_attacked(attack, instantiate_attacker(attack.attacker), task, splits, store, progress, label)
        evaluation = evaluate(model, triggers, splits.test)
    return AttackRecord(
        attack, manifest["sha256"], tuple(manifest["triggers"]), evaluation, float(manifest["seconds_train"]), cached, manifest["fingerprint"], manifest["numerics"]
    )


def defense_stage(
    spec: MatchSpec,
    attacked: AttackRecord,
    honest: AttackRecord,
    store: ArtifactStore,
    progress: ProgressFn = no_progress,
    stealth_tolerance: float = DEFAULT_STEALTH_TOLERANCE,
    compute: Compute = CPU,
) -> MatchResult:
    """Hand the published model to the defender and score the deployed system, on `compute`'s device.

    The verdict rule (docs/design.md §3): a model the defense flags and neither repairs nor
    guards with an input filter is rejected, and the user deploys the fallback instead
    (`obtain_fallback`); its CA and ASR are the defended system's. A filter returned with the
    verdict is the defense's mitigation: the published model is deployed behind it.
    """
    start = time.perf_counter()
    attack = spec.attack
    if attacked.spec != attack or honest.spec != honest_spec(attack):
        raise ValueError("defense_stage got attack records of another match")
    with pinned(), using(compute):
        task = task_for(attack.dataset, attack.architecture, attack.epochs)
        splits = player_splits(load_dataset(attack.dataset), attack.clean_budget).to(compute.torch_device)
        loaded = store.load(store_key(attack.key, compute), published_builder(task))
        if loaded is None:
            raise ArtifactIntegrityError(f"the attacked model {attack.key[:12]} is not in the store at {store.root}")
        model, manifest = loaded
        if manifest["sha256"] != attacked.sha256:
            raise ArtifactIntegrityError(f"the attacked model {attack.key[:12]} changed in the store since it was evaluated; refused.")
        triggers = [trigger_from_dict(t) for t in attacked.triggers]
        defender = instantiate_defender(spec.defender)
        seed = defense_seed(spec, attacked.sha256)
        fallback_sha: list[str] = []

        def fallback() -> nn.Module:
            fallback_model, sha = obtain_fallback(attack, task, splits, store)
            fallback_sha.append(sha)
            return fallback_model

        # an n/a cell (docs/design.md §10): the defense cannot act on this model, so it is not run
        # and the published model is deployed as it is
        not_applicable = not_applicable_reason(defender, model)
        with contextlib.ExitStack() as sandbox:
            t0 = time.perf_counter()
            if not_applicable:
                outcome = DefenseOutcome()
            elif is_baseline(defender):
                outcome = defender.defend(model, task, splits.clean, torch.Generator().manual_seed(seed), prefixed(progress, "defense"))
            else:
                box = sandbox.enter_context(Sandbox(StrategyRef.of(type(defender), "defender"), compute=compute))
                t0 = time.perf_counter()  # the defense's own time, without the worker's start
                outcome = run_defender(box, defender, task, store.verified_blob(attacked.sha256), attacked.sha256, manifest, splits, seed, compute, prefixed(progress, "defense"))
            seconds_defense = time.perf_counter() - t0
            deployed, system, system_filter = deployed_system(outcome, model, fallback)
            deployed = "n/a" if not_applicable else deployed
            if system is model and system_filter is None:
                # the published model deployed as it is (no defense, an n/a cell, a verdict that
                # cleared it): the system the attack stage already evaluated, on the same test
                # split with the same triggers, so its figures are those (not computed again)
                defended = attacked.evaluation
            else:
                # the asking order is the evaluator's secret: derived under the home's key, so no defense can rebuild it
                defended = evaluate(system, triggers, splits.test, system_filter, seed=derive_seed(attack.seed, "filter", store.secret_tag(spec.key)))
        here = numerics()
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
        deployed=deployed,
        not_applicable=not_applicable,
        fallback_sha256=fallback_sha[0] if fallback_sha else None,
        targets=trigger_targets(triggers, task.num_classes),
        fingerprints={"attacker": attacked.fingerprint, "honest": honest.fingerprint, "defender": code_fingerprint(type(defender))},
        # a stage run elsewhere under other numerics is named, never folded in silently
        numerics=here if attacked.numerics == here == honest.numerics else {**here, "attack_stages": [attacked.numerics, honest.numerics]},
        provenance={"arena_version": arena.__version__, "git_commit": git_commit()},
    )


def defense_seed(spec: MatchSpec, published_sha256: str) -> int:
    """The defender's seed, from what the defender holds (its own spec, the weights it is given,
    the match seed): never from the attacker's half of the spec, which a defense could recover by
    trying every registered attacker's parameters against the seed it was handed."""
    return derive_seed(spec.attack.seed, "defense", digest({"defender": spec.defender.to_dict(), "model": published_sha256}))


def run_defender(
    box: Sandbox,
    defender: Defender,
    task: TaskSpec,
    weights: bytes,
    sha256: str,
    manifest: dict[str, Any],
    splits: Any,
    seed: int,
    compute: Compute,
    progress: ProgressFn,
    device_guard: bool = False,
) -> DefenseOutcome:
    """The defender's outcome from its sandboxed worker, checked (docs/design.md §1): it gets the
    published weights as stored, the task, its clean split (none when it declares `data_free`)
    and a seed. A repaired model must load strictly into the published architecture and answer
    the task (a repaired model of another architecture, e.g. a preprocessing step in front of the
    published one, stays in the worker and is asked for predictions: `ServedModel`); a verdict
    must be a flag, a number and labels of the task; an input filter stays in the worker and is
    asked by the evaluator (`SandboxedFilter`)."""
    who = f"defender {defender.name!r}"
    clean = splits.clean.subset(torch.arange(0)) if defender.data_free else splits.clean
    published = str(manifest.get("published_architecture", task.architecture))
    # the architecture's origins only: the trigger kinds' would tell the defense what the attack is
    origins = [o for o in manifest.get("origins", []) if isinstance(o, dict) and o.get("registry") != TRIGGERS.kind]
    reply = box.defend(defender, task, weights, sha256, published, origins, clean, seed, compute, progress, device_guard)
    repaired: nn.Module | None = None
    if reply.header.get("repaired") == "weights":
        repaired = published_builder(task)(manifest)
        load_returned_weights(repaired, reply.tensors, who, "repaired model")
        check_logits(repaired, task, who, compute.torch_device)
    elif reply.header.get("repaired") == "served":  # not the published architecture: it answers from its worker
        repaired = ServedModel(lambda x: box.ask_predictions(x, task.num_classes))
    return DefenseOutcome(
        model=repaired,
        input_filter=SandboxedFilter(box) if reply.header.get("filter") is True else None,
        verdict=verdict_from(reply.header.get("verdict"), task.num_classes, who),
    )


def _train_in_subprocess(attack: AttackSpec, root: str, label: str, queue: Any, compute: Compute) -> None:
    """Child process of `train_side_by_side`: one attack stage; progress goes back on `queue`.
    Whatever the strategy prints goes to stderr: stdout belongs to the parent's result. Ctrl-C is
    the parent's to handle (it shares the terminal's process group): the child, a daemon, ends
    with it, without a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.dup2(2, 1)
    try:
        attack_stage(attack, ArtifactStore(Path(root)), lambda stage, done, total: queue.put((stage, done, total)), label, compute)
    finally:
        queue.put(None)


def train_side_by_side(
    attacks: dict[str, AttackSpec], store: ArtifactStore, progress: ProgressFn = no_progress, max_parallel: int | None = None, compute: Compute = CPU
) -> None:
    """Train several attacked models at once, one process each and at most `max_parallel`
    (default: the core count) at a time. Every stage runs on the contract's fixed thread count,
    so parallelism comes from processes and the weights are those of a one-by-one run. Best
    effort: a stage that fails here is simply not in the store, and the caller's own stage then
    trains it, or raises its error, in-process."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe under torch's thread pools
    queue = context.Queue()
    waiting = [context.Process(target=_train_in_subprocess, args=(a, str(store.root), label, queue, compute), daemon=True) for label, a in attacks.items()]
    limit = max(1, max_parallel or usable_cores())
    running: list[Any] = []
    while waiting or running:
        while waiting and len([w for w in running if w.is_alive()]) < limit:
            worker = waiting.pop(0)
            worker.start()
            running.append(worker)
        try:
            message = queue.get(timeout=0.5)
        except queue_module.Empty:
            running = [w for w in running if w.is_alive()]  # a child that died without a word is dropped
            continue
        if message is None:  # a child is done
            running = [w for w in running if w.is_alive()]
            continue
        progress(*message)


def usable_cores() -> int:
    """Cores this process may run on (an affinity mask, e.g. `taskset`, counts; cpu_count does not)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_match(
    prepared: Prepared,
    store: ArtifactStore | None = None,
    progress: ProgressFn = no_progress,
    stealth_tolerance: float = DEFAULT_STEALTH_TOLERANCE,
    side_by_side: bool = False,
    compute: Compute = CPU,
) -> MatchResult:
    """One match: honest baseline, attacked model, defense, evaluation.

    With `side_by_side`, the honest and the attacked model, when both must be trained and the
    training is large enough to pay for a process start, are trained at once in two processes
    (same weights, about half the wall time on 2+ cores).
    """
    start = time.perf_counter()
    store = store or ArtifactStore()
    spec = prepared.spec
    trained_here: set[str] = set()
    work = len(load_dataset(spec.attack.dataset).train) * spec.attack.epochs
    if side_by_side and usable_cores() > 1 and work >= SIDE_BY_SIDE_MIN_SAMPLE_EPOCHS:
        missing = {label: a for label, a in (("honest", honest_spec(spec.attack)), ("attack", spec.attack)) if needs_training(a, store, compute)}
        if len(missing) > 1:
            try:
                train_side_by_side(missing, store, progress, compute=compute)
            except OSError:  # no process to be had: the stages below train in-process
                pass
            trained_here = {a.key for a in missing.values()}
    honest = attack_stage(honest_spec(spec.attack), store, progress, label="honest", compute=compute)
    attacked = honest if spec.attack == honest.spec else attack_stage(spec.attack, store, progress, compute=compute)
    if attacked.spec.key in trained_here:
        attacked = dataclasses.replace(attacked, cached=False)
    result = defense_stage(spec, attacked, honest, store, progress, stealth_tolerance, compute)
    result.seconds_total = time.perf_counter() - start
    return result
