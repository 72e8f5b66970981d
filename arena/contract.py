"""The strategy contract: the checks every attacker and defender must pass, on tiny data.

Adversarial: the strategy is run as a tournament runs it, in its sandbox (arena/sandbox.py),
twice; its module is first imported in a worker of its own, so a module that exits or crashes
on import fails before arena imports it; an input filter is asked as the evaluator asks it
(mixed batches, twice); and what the strategy's code reached for (files, listings, sockets,
subprocesses, object walks, frame inspection) is reported, each attempt a failed check.

Used three ways: `arena check defender NAME` (or `path/to/file.py:ClassName`), the test base
classes `AttackerContract` / `DefenderContract` that plugin authors subclass in their own test
suites, and arena's own tests over every built-in strategy.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from arena.device import CPU
from arena.errors import ArenaError, StrategyError, UsageError
from arena.evaluator import FilterInconsistent
from arena.registry import ATTACKERS, DEFENDERS, RegistrationError, Registry
from arena.sandbox import Sandbox, SandboxLimits, SandboxTimeout, StrategyRef, sandbox_mode
from arena.sandbox import doctor as sandbox_doctor
from arena.strategy import Attacker, Defender, Strategy

CHECK_EPOCHS = 3  # the tiny task's training budget


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


class BoundaryViolation(StrategyError):
    """Raised when a strategy reaches for a dataset through arena instead of its context."""


def load_strategy(kind: str, ref: str) -> type[Strategy]:
    """A registered name (built-in or `package/name`), or `path/to/file.py:ClassName`."""
    registry: Registry = ATTACKERS if kind == "attacker" else DEFENDERS
    if ":" in ref and ref.split(":", 1)[0].endswith(".py"):
        path_text, cls_name = ref.split(":", 1)
        path = Path(path_text)
        if not path.exists():
            raise UsageError(f"no file {path}.")
        module_name = f"arena_check_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # so the class pickles by reference in this process
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"{path} failed to import: {type(exc).__name__}: {exc}") from None
        cls = getattr(module, cls_name, None)
        if cls is None:
            raise UsageError(f"{path} has no class {cls_name!r}.")
        return cls
    return registry.get(ref)


def _tiny(architecture: str = "badnets_cnn") -> tuple[Any, Any]:
    from arena.data import load_dataset, player_splits
    from arena.match import task_for

    return task_for("digits", architecture, CHECK_EPOCHS), player_splits(load_dataset("digits"), 0.05)


def _architecture_for(defender: Defender) -> str:
    """The first registered architecture the defender can act on (badnets_cnn first, the default),
    so a defense that needs batch normalisation is checked on a model that has it."""
    from arena.capabilities import not_applicable_reason
    from arena.models import ARCHITECTURES, build_model

    names = sorted((a.name for a in ARCHITECTURES.all_entries().values() if a is not None and a.build is not None), key=lambda n: n != "badnets_cnn")
    for name in names:
        task, _ = _tiny(name)
        if not_applicable_reason(defender, build_model(task)) is None:
            return name
    return "badnets_cnn"  # none fits: the run then says what the defender lacks


def _metadata_checks(cls: Any, registry: Registry) -> list[Check]:
    out = []
    try:
        registry.validate(cls)
        out.append(Check("metadata", True, f"{cls.name} v{cls.version}: {cls.paper}"))
    except RegistrationError as exc:
        return [Check("metadata", False, str(exc))]
    try:
        instance = cls()
        assert instance.params == cls.space.defaults()
        cls.space.tune_space()
        out.append(Check("hyperparameter space", True, f"{len(cls.space)} parameters, defaults valid, Ray Tune space built"))
    except Exception as exc:
        out.append(Check("hyperparameter space", False, f"{type(exc).__name__}: {exc}"))
        return out
    try:
        StrategyRef.of(cls, registry.kind)
        out.append(Check("importable by the sandbox", True, f"{cls.__module__}.{cls.__qualname__}"))
    except ArenaError as exc:
        out.append(Check("importable by the sandbox", False, str(exc)))
    return out


def _sandbox_check(mode: str) -> Check:
    return Check("runs sandboxed", True, f"mode {mode}: " + sandbox_doctor()["guarantees"])


def _reached_for(attempts: list[dict[str, Any]]) -> Check:
    """What the strategy's own code reached for, as its worker's audit hook saw it (arena/sandbox.py)."""
    if not attempts:
        return Check("stays inside its row", True, "no file, listing, socket, subprocess, object walk or frame inspection outside its own module")
    shown = "; ".join(f"{a.get('event')} {a.get('detail', '')}".strip() for a in attempts[:20])
    more = f" (and {len(attempts) - 20} more)" if len(attempts) > 20 else ""
    blocked = "each was blocked by the sandbox" if sandbox_mode() == "bwrap" else "the weaker process sandbox blocks none of the file or network ones"
    return Check("stays inside its row", False, f"it reached for: {shown}{more}; {blocked}. A strategy needs only what its context gives it.")


def _failed_run(exc: BaseException, what: str) -> Check:
    if isinstance(exc, BoundaryViolation):
        return Check("information boundary", False, str(exc))
    if isinstance(exc, TimeoutError):
        return Check("time budget", False, str(exc))
    if isinstance(exc, FilterInconsistent):
        return Check("input filter judges each input alone", False, str(exc))
    if isinstance(exc, StrategyError) and "on a GPU this is a device mismatch" in str(exc):
        return Check("keeps its tensors on the job's device", False, str(exc))
    if isinstance(exc, ArenaError):
        return Check(f"runs on tiny data and returns a valid {what}", False, str(exc))
    return Check(f"runs on tiny data and returns a valid {what}", False, f"the hook raised {type(exc).__name__}: {exc}")


def _states_equal(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _timed_request(box: Sandbox, time_budget_s: float, run: Callable[[], Any]) -> Any:
    """Run one request against the time budget: the worker is killed when it runs past it."""
    box.set_deadline(time_budget_s)
    start = time.perf_counter()
    try:
        return run()
    except SandboxTimeout:
        raise TimeoutError(f"did not finish within its time budget of {time_budget_s:g} s") from None
    finally:
        box.seconds_last = time.perf_counter() - start


def probe_import(ref: StrategyRef) -> Check:
    """Import the strategy's module in a worker before arena imports it anywhere: a module that
    exits, crashes or hangs on import fails here, with what it did."""
    try:
        with Sandbox(ref, SandboxLimits(wall_seconds=120.0)):
            pass
    except SandboxTimeout:
        return Check("imports cleanly in the sandbox", False, "importing its module did not finish within 120 s")
    except ArenaError as exc:
        return Check("imports cleanly in the sandbox", False, f"importing its module failed: {exc}")
    return Check("imports cleanly in the sandbox", True)


def check_attacker(cls: type[Attacker], time_budget_s: float = 60.0) -> list[Check]:
    checks = _metadata_checks(cls, ATTACKERS)
    if not all(c.ok for c in checks):
        return checks
    task, splits = _tiny()
    ref = StrategyRef.of(cls, "attacker")
    outs, attempts = [], []
    try:
        for guarded in (False, True):  # the second run under the fake device (arena/device.py)
            with Sandbox(ref) as box:
                reply = _timed_request(box, time_budget_s, lambda: box.attack(cls(), task, splits.attacker, 11, CPU, device_guard=guarded))  # noqa: B023
                attempts = box.attempts()
                outs.append(reply)
    except Exception as exc:
        return [*checks, _failed_run(exc, "AttackOutput")]
    checks.append(Check("runs on tiny data and returns a valid AttackOutput", True, f"{box.seconds_last:.1f} s"))
    same = _states_equal(outs[0].tensors, outs[1].tensors) and outs[0].header["triggers"] == outs[1].header["triggers"]
    checks.append(Check("deterministic under a seed", same, "" if same else "two runs with the same generator seed gave different models or triggers"))
    checks += [_sandbox_check(sandbox_mode()), _reached_for(attempts)]
    return checks


def check_defender(cls: type[Defender], time_budget_s: float = 60.0) -> list[Check]:
    checks = _metadata_checks(cls, DEFENDERS)
    if not all(c.ok for c in checks):
        return checks
    from arena.evaluator import ServedModel, filter_answers, predictions
    from arena.match import run_defender
    from arena.store import ArtifactStore

    defender = cls()
    task, splits = _tiny(_architecture_for(defender))
    with tempfile.TemporaryDirectory(prefix="arena-check-") as home:
        store = ArtifactStore(Path(home))
        attack = ATTACKERS.get("badnets")().attack(task, splits.attacker, torch.Generator().manual_seed(3))
        manifest = store.save("victim", attack.model, {"published_architecture": task.architecture, "origins": []})
        weights = store.verified_blob(manifest["sha256"])
    versions = [splits.test.x, *(t.apply(splits.test.x) for t in attack.triggers)]
    ref = StrategyRef.of(cls, "defender")
    outs, attempts = [], []
    try:
        for guarded in (False, True):  # the second run under the fake device (arena/device.py)
            with Sandbox(ref) as box:

                def run() -> Any:
                    return run_defender(box, defender, task, weights, manifest["sha256"], manifest, splits, 5, CPU, lambda *_: None, device_guard=guarded)  # noqa: B023

                outcome = _timed_request(box, time_budget_s, run)
                answers = None
                if outcome.input_filter is not None:  # asked as the evaluator asks: mixed batches, twice
                    answers = _timed_request(box, time_budget_s, lambda: filter_answers(outcome.input_filter, attack.model, versions, seed=7))  # noqa: B023
                if isinstance(outcome.model, ServedModel):  # another architecture: judged by its predictions, asked fairly
                    served = _timed_request(box, time_budget_s, lambda: predictions(outcome.model, versions, seed=8))  # noqa: B023
                    answers = (answers or []) + served
                attempts = box.attempts()
                state = None if outcome.model is None else {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
                outs.append((outcome.verdict, state, answers))
    except Exception as exc:
        return [*checks, _failed_run(exc, "DefenseOutcome")]
    checks.append(Check("runs on tiny data and returns a valid DefenseOutcome", True, f"{box.seconds_last:.1f} s"))
    (v1, s1, a1), (v2, s2, a2) = outs
    same = v1 == v2 and _states_equal(s1, s2) and (a1 is None) == (a2 is None) and (a1 is None or all(torch.equal(x, y) for x, y in zip(a1, a2 or [])))
    checks.append(Check("deterministic under a seed", same, "" if same else "two runs with the same generator seed gave different outcomes"))
    if a1 is not None:
        checks.append(Check("input filter judges each input alone", True, "the same answers in mixed batches of clean and triggered inputs, asked twice"))
    if isinstance(outcome.model, ServedModel):
        checks.append(Check("served repaired model judges each input alone", True, "not the published architecture: it stays in its worker, and gave the same labels in mixed batches, asked twice"))
    checks += [_sandbox_check(sandbox_mode()), _reached_for(attempts)]
    return checks


def check(kind: str, ref: str, time_budget_s: float = 60.0) -> list[Check]:
    probe = _probe_before_loading(kind, ref)
    if probe is not None and not probe.ok:
        return [probe]
    cls = load_strategy(kind, ref)
    base = Attacker if kind == "attacker" else Defender
    if not isinstance(cls, type) or not issubclass(cls, base):
        return [Check("metadata", False, f"{ref} is not a subclass of arena.strategy.{base.__name__}")]
    results = check_attacker(cast(type[Attacker], cls), time_budget_s) if kind == "attacker" else check_defender(cast(type[Defender], cls), time_budget_s)
    return ([probe] if probe is not None else []) + results


def _probe_before_loading(kind: str, ref: str) -> Check | None:
    """The import probe for what arena has not imported yet: a file, or an installed plugin."""
    if ":" in ref and ref.split(":", 1)[0].endswith(".py"):
        path_text, cls_name = ref.split(":", 1)
        path = Path(path_text)
        if not path.is_file():
            raise UsageError(f"no file {path}.")
        return probe_import(StrategyRef(kind, cls_name, f"arena_check_{path.stem}", cls_name, str(path.resolve())))
    registry: Registry = ATTACKERS if kind == "attacker" else DEFENDERS
    point = registry._plugin_points().get(ref)
    if point is None or ref in registry._builtins:
        return None
    module, _, attr = point.value.partition(":")
    return probe_import(StrategyRef(kind, ref, module.strip(), attr.strip() or ref))


# ---------------------------------------------------------------------------------------------
# Test base classes for plugin authors (pytest collects the subclasses)


class _Contract:
    strategy: Any = None  # a class, a registered name, or "path.py:ClassName"
    kind = ""
    time_budget_s = 60.0

    def test_contract(self) -> None:
        ref = self.strategy
        cls = ref if isinstance(ref, type) else load_strategy(self.kind, ref)
        results = check_attacker(cls, self.time_budget_s) if self.kind == "attacker" else check_defender(cls, self.time_budget_s)
        failed = [f"{c.name}: {c.detail}" for c in results if not c.ok]
        assert not failed, "contract broken: " + "; ".join(failed)


class AttackerContract(_Contract):
    """Subclass with `strategy = MyAttack` in your tests: runs arena's attacker contract."""

    kind = "attacker"


class DefenderContract(_Contract):
    """Subclass with `strategy = MyDefense` in your tests: runs arena's defender contract."""

    kind = "defender"
