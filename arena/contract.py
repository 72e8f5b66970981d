"""The strategy contract: the checks every attacker and defender must pass, on tiny data.

Used three ways: `arena check defender NAME` (or `path/to/file.py:ClassName`), the test base
classes `AttackerContract` / `DefenderContract` that plugin authors subclass in their own test
suites, and arena's own tests over every built-in strategy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from arena import data as data_module
from arena.device import DeviceGuard
from arena.errors import ArenaError, StrategyError, UsageError
from arena.registry import ATTACKERS, DEFENDERS, RegistrationError, Registry
from arena.strategy import Attacker, Defender, Strategy

CHECK_EPOCHS = 3  # the tiny task's training budget


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


class BoundaryViolation(Exception):
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


def _timed(fn: Callable[[], Any], limit_s: float) -> Any:
    """Run fn in a thread; a TimeoutError if it does not return within limit_s (the thread is
    abandoned: the CLI exits after reporting, and Ray workers are killed by the tournament)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise TimeoutError(f"did not finish within its time budget of {limit_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class _FenceDatasets:
    """While active, any attempt to load a dataset through arena raises BoundaryViolation."""

    def __enter__(self) -> None:
        def fence(name: str) -> Any:
            raise BoundaryViolation("the strategy loaded a dataset itself; it must use only what its context gives it")

        self.previous = data_module._fence
        data_module._fence = fence

    def __exit__(self, *exc: Any) -> None:
        data_module._fence = self.previous


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
        from ray import cloudpickle

        clone = cloudpickle.loads(cloudpickle.dumps(instance))
        assert clone.params == instance.params
        out.append(Check("picklable for Ray workers", True))
    except Exception as exc:
        out.append(Check("picklable for Ray workers", False, f"{type(exc).__name__}: {exc}"))
    return out


def _run_twice(run: Callable[[], Any], what: str, time_budget_s: float, guard: DeviceGuard | None = None) -> tuple[list[Any], Check]:
    """Run a strategy twice under the dataset fence and the time budget: (outputs, its check).
    The second run is watched by `guard`, the fake device (arena/device.py): it observes and
    changes no number, so the two runs must still agree. The outputs are empty when the run
    failed; the check then says how."""

    def watched() -> Any:
        with guard or contextlib.nullcontext():  # a torch function mode is per thread: entered in the run's own
            return run()

    try:
        with _FenceDatasets():
            outs = []
            for attempt in (run, watched):
                start = time.perf_counter()
                outs.append(_timed(attempt, time_budget_s))
        return outs, Check(f"runs on tiny data and returns a valid {what}", True, f"{time.perf_counter() - start:.1f} s")
    except BoundaryViolation as exc:
        return [], Check("information boundary", False, str(exc))
    except TimeoutError as exc:
        return [], Check("time budget", False, str(exc))
    except StrategyError as exc:
        if guard is not None and "on a GPU this is a device mismatch" in str(exc):
            return [], Check("keeps its tensors on the job's device", False, str(exc))
        return [], Check(f"runs on tiny data and returns a valid {what}", False, str(exc))
    except ArenaError as exc:
        return [], Check(f"runs on tiny data and returns a valid {what}", False, str(exc))
    except Exception as exc:
        return [], Check(f"runs on tiny data and returns a valid {what}", False, f"the hook raised {type(exc).__name__}: {exc}")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_attacker(cls: type[Attacker], time_budget_s: float = 60.0) -> list[Check]:
    checks = _metadata_checks(cls, ATTACKERS)
    if not all(c.ok for c in checks):
        return checks
    task, splits = _tiny()
    guard = DeviceGuard(f"attacker {cls.name!r}")
    guard.adopt(splits.attacker)
    outs, ran = _run_twice(lambda: cls().attack(task, splits.attacker, torch.Generator().manual_seed(11)), "AttackOutput", time_budget_s, guard)
    checks.append(ran)
    if not outs:
        return checks
    same = _same_weights(outs[0].model, outs[1].model) and [t.to_dict() for t in outs[0].triggers] == [t.to_dict() for t in outs[1].triggers]
    checks.append(Check("deterministic under a seed", same, "" if same else "two runs with the same generator seed gave different models or triggers"))
    return checks


def check_defender(cls: type[Defender], time_budget_s: float = 60.0) -> list[Check]:
    checks = _metadata_checks(cls, DEFENDERS)
    if not all(c.ok for c in checks):
        return checks
    task, splits = _tiny(_architecture_for(cls()))
    victim = ATTACKERS.get("badnets")().attack(task, splits.attacker, torch.Generator().manual_seed(3)).model
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    clean_before = splits.clean.x.clone()
    guard = DeviceGuard(f"defender {cls.name!r}")
    guard.adopt(victim, splits.clean, splits.test)

    def run() -> Any:
        outcome = cls().defend(victim, task, splits.clean, torch.Generator().manual_seed(5))
        if outcome.input_filter is not None:  # the evaluator queries a filter on the job's device too
            outcome.input_filter.accept(outcome.model or victim, splits.test.x[:64])
        return outcome

    outs, ran = _run_twice(run, "DefenseOutcome", time_budget_s, guard)
    checks.append(ran)
    if not outs:
        return checks
    untouched = all(torch.equal(before[k], v) for k, v in victim.state_dict().items()) and torch.equal(clean_before, splits.clean.x)
    checks.append(Check("leaves the given model and data untouched", untouched, "" if untouched else "the caller's model or clean split changed"))
    same = outs[0].verdict == outs[1].verdict and (outs[0].model is None) == (outs[1].model is None)
    if same and outs[0].model is not None:
        same = _same_weights(outs[0].model, outs[1].model)
    if same and outs[0].input_filter is not None:
        same = torch.equal(outs[0].input_filter.accept(outs[0].model or victim, splits.test.x), outs[1].input_filter.accept(outs[1].model or victim, splits.test.x))
    checks.append(Check("deterministic under a seed", same, "" if same else "two runs with the same generator seed gave different outcomes"))
    return checks


def check(kind: str, ref: str, time_budget_s: float = 60.0) -> list[Check]:
    cls = load_strategy(kind, ref)
    base = Attacker if kind == "attacker" else Defender
    if not isinstance(cls, type) or not issubclass(cls, base):
        return [Check("metadata", False, f"{ref} is not a subclass of arena.strategy.{base.__name__}")]
    return check_attacker(cast(type[Attacker], cls), time_budget_s) if kind == "attacker" else check_defender(cast(type[Defender], cls), time_budget_s)


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
