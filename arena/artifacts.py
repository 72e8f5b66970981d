"""The harness's artifacts: attacked, honest and fallback models, trained once and reused only while current.

A stored model is reused when its manifest records the same code fingerprint and numerics as
this run (docs/design.md §6); otherwise it is retrained under the same key. Every model a stage
uses is the one read back from the store, as a user who downloaded the file would hold it. The
manifest records where the model's architecture and trigger kinds come from, and whoever
rebuilds the model imports exactly those first (docs/design.md §10).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import arena
from arena.data import PlayerSplits
from arena.device import CPU, Compute, current, store_key
from arena.errors import ArtifactIntegrityError, ParamError, StrategyError
from arena.models import ARCHITECTURES, build_model
from arena.protocol import ProgressFn, Split, TaskSpec, Trigger, no_progress
from arena.provenance import code_fingerprint, git_commit, numerics
from arena.registry import ATTACKERS, DEFENDERS, Registry, load_origins
from arena.sandbox import Sandbox, StrategyRef
from arena.specs import AttackSpec, StrategySpec, derive_seed, digest
from arena.store import ArtifactStore
from arena.strategy import Attacker, Defender, check_logits
from arena.triggers import TRIGGERS, trigger_from_dict, trigger_kinds


def prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
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
    """The attacked model of `attack`: from the store when there and current, else trained and stored.

    A stored model is current when its manifest records this attacker's code fingerprint and
    these numerics; otherwise it is retrained under the same key (the old blob stays).
    Returns (model as loaded back from the store, triggers, manifest, cached).
    """

    def train() -> tuple[nn.Module, dict[str, Any]]:
        model, triggers = run_attacker(attacker, task, splits.attacker, derive_seed(attack.seed, "attack", attack.key), prefixed(progress, label))
        published = attacker.published_architecture(task)
        record = {"spec": attack.to_dict(), "triggers": triggers, "published_architecture": published, "origins": origins_of(triggers, published)}
        return model, record

    key = store_key(attack.key, current())
    model, manifest, cached = _obtain(store, key, code_fingerprint(type(attacker)), task, train)
    return model, _manifest_triggers(manifest, store.manifest_path(key)), manifest, cached


def _obtain(
    store: ArtifactStore,
    key: str,
    fingerprint: str,
    task: TaskSpec,
    train: Callable[[], tuple[nn.Module, dict[str, Any]]],
) -> tuple[nn.Module, dict[str, Any], bool]:
    """A harness artifact: loaded when stored under the same code and numerics, else `train()`ed,
    stored and read back (the caller gets exactly what a downloader of the file gets)."""
    current = _provenance_of(fingerprint)
    if _is_current(store.read_manifest(key), current):
        loaded = store.load(key, published_builder(task))
        if loaded is not None:
            return loaded[0], loaded[1], True
    start = time.perf_counter()
    model, record = train()
    record.update(
        current,
        task=task.to_dict(),
        seconds_train=time.perf_counter() - start,
        arena_version=arena.__version__,
        git_commit=git_commit(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    store.save(key, model, record)
    loaded = store.load(key, published_builder(task))
    assert loaded is not None  # just written
    return loaded[0], loaded[1], False


def _provenance_of(fingerprint: str, compute: Compute | None = None) -> dict[str, Any]:
    """What a stored artifact must record to be reused here: its code and these numerics."""
    return {"fingerprint": fingerprint, "numerics": numerics(compute)}


def _is_current(manifest: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    return manifest is not None and all(manifest.get(k) == v for k, v in current.items())


def fallback_key(attack: AttackSpec) -> str:
    """Store key of the verdict rule's fallback model for a match's dataset, budgets and seed."""
    return digest({"fallback_of": honest_spec(attack).to_dict()})


def obtain_fallback(attack: AttackSpec, task: TaskSpec, splits: PlayerSplits, store: ArtifactStore) -> tuple[nn.Module, str]:
    """The model a user deploys after rejecting a flagged model (docs/design.md, the verdict rule):
    the task's architecture trained by the harness with the honest recipe on the defender's clean
    split alone, for as many samples seen as honest training (epochs scaled by the ratio of the
    two splits' sizes: a user with only the clean split trains on it until it has seen as much),
    seeded by the match seed. Stored and reused like any artifact."""
    honest = honest_spec(attack)
    trainer = instantiate_attacker(honest.attacker)
    key = fallback_key(attack)
    budget = dataclasses.replace(task, epochs=max(task.epochs, round(task.epochs * len(splits.attacker) / max(1, len(splits.clean)))))

    def train() -> tuple[nn.Module, dict[str, Any]]:
        generator = torch.Generator().manual_seed(derive_seed(attack.seed, "fallback", key))
        out = trainer.attack(budget, splits.clean, generator)
        return out.model, {"spec": {"fallback_of": honest.to_dict(), "epochs": budget.epochs}, "triggers": []}

    model, manifest, _ = _obtain(store, store_key(key, current()), code_fingerprint(type(trainer)), task, train)
    return model, str(manifest["sha256"])


# The registries whose entries an attacked model can depend on, by the kind its manifest records.
ORIGIN_REGISTRIES: dict[str, Registry[Any]] = {r.kind: r for r in (TRIGGERS, ARCHITECTURES)}


def origins_of(triggers: list[dict[str, Any]], architecture: str) -> list[dict[str, Any]]:
    """Where each trigger kind and architecture part of an attacked model comes from (module and
    distribution), for the stages that rebuild it in another process (docs/design.md §10)."""
    kinds = dict.fromkeys(kind for t in triggers for kind in trigger_kinds(t))
    return [TRIGGERS.origin(kind) for kind in kinds] + [ARCHITECTURES.origin(part) for part in architecture.split("+")]


def published_builder(task: TaskSpec) -> Callable[[dict[str, Any]], nn.Module]:
    """Builds the architecture an attacked model's manifest says was published (the task's own,
    or a wrapper around it declared by an attacker that changes the architecture), after importing
    the modules its manifest records as the origins of its architecture and trigger kinds."""

    def build(manifest: dict[str, Any]) -> nn.Module:
        load_origins(manifest.get("origins", []), ORIGIN_REGISTRIES, f"The attacked model {str(manifest.get('key', '?'))[:12]}")
        return build_model(dataclasses.replace(task, architecture=manifest.get("published_architecture", task.architecture)), device=current().torch_device)

    return build


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
    return AttackSpec(StrategySpec.of("none", honest.version, honest.spec_params), attack.dataset, attack.architecture, attack.epochs, attack.clean_budget, attack.seed)


def instantiate_attacker(spec: StrategySpec) -> Attacker:
    return _instantiate(ATTACKERS.get(spec.name), spec)


def instantiate_defender(spec: StrategySpec) -> Defender:
    return _instantiate(DEFENDERS.get(spec.name), spec)


def check_version(cls: Any, version: str, name: str) -> None:
    if cls.version != version:
        raise ParamError(f"{cls.kind} {name!r} is at version {cls.version}, but the spec asks for version {version}.")


def _instantiate(cls: Any, spec: StrategySpec) -> Any:
    check_version(cls, spec.version, spec.name)
    return cls(**spec.param_dict)


def is_baseline(strategy: Any) -> bool:
    """The honest baselines (attacker and defender `none`) are the harness's own reference
    procedures (the honest model, the fallback, deploying as is): they run in the driver. Every
    other strategy, built-in or plugin, runs sandboxed (arena/sandbox.py)."""
    return getattr(strategy, "name", None) == "none" and type(strategy).__module__.startswith("arena.")


def run_attacker(attacker: Attacker, task: TaskSpec, data: Split, seed: int, progress: ProgressFn = no_progress) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The attacker's published model and its triggers' JSON forms, from a sandboxed worker
    (docs/design.md §1): it gets its split, the task and a seed as data and returns weights and
    trigger records as data, which are checked here: the weights must load strictly into the
    architecture the attacker declares it publishes and answer the task, each trigger must rebuild
    from its JSON form as a registered kind with a goal inside the task's labels."""
    compute = current()
    if is_baseline(attacker):
        out = attacker.attack(task, data, torch.Generator().manual_seed(seed), progress)
        return out.model, [t.to_dict() for t in out.triggers]
    who = f"attacker {attacker.name!r}"
    with Sandbox(StrategyRef.of(type(attacker), "attacker"), compute=compute) as box:
        reply = box.attack(attacker, task, data, seed, compute, progress)
    model = build_model(dataclasses.replace(task, architecture=attacker.published_architecture(task)), device=compute.torch_device)
    load_returned_weights(model, reply.tensors, who, "published model")
    check_logits(model, task, who, compute.torch_device)
    triggers: list[dict[str, Any]] = reply.header["triggers"]
    names = []
    for record in triggers:
        try:
            trigger = trigger_from_dict(record)
            trigger.goal.check(task.num_classes)
        except Exception as exc:
            raise StrategyError(f"{who} returned a trigger record that does not rebuild as a registered trigger kind of this task ({type(exc).__name__}: {exc}); refused.") from None
        names.append(trigger.name)
    if len(set(names)) != len(names):
        raise StrategyError(f"{who} returned triggers with duplicate names.")
    return model, triggers


def load_returned_weights(model: nn.Module, state: dict[str, torch.Tensor], who: str, what: str) -> None:
    """Load weights a sandboxed worker returned into a model the driver built: every tensor of
    the architecture, of its shape, and nothing else (values are not checked: a defense that
    returns NaN weights is scored on what they predict)."""
    try:
        model.load_state_dict({k: v.to(next(iter(model.state_dict().values())).device) for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError, StopIteration) as exc:
        raise StrategyError(f"{who} returned a {what} that is not the architecture it must be ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); refused.") from None
    model.eval()


def needs_training(attack: AttackSpec, store: ArtifactStore, compute: Compute = CPU) -> bool:
    current_here = _provenance_of(code_fingerprint(ATTACKERS.get(attack.attacker.name)), compute)
    return not _is_current(store.read_manifest(store_key(attack.key, compute)), current_here)
