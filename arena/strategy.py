"""Family base classes. Each public entry point is final: it validates, then calls one narrow hook.

A strategy declares a version (bump when behaviour changes), the paper it follows, its
deviations, and a hyperparameter space. It never seeds anything globally: all randomness comes
from the generator in its context.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import nn

from arena.capabilities import not_applicable_reason
from arena.errors import ParamError, StrategyError
from arena.models import build_model, structure
from arena.params import Space
from arena.protocol import (
    AttackOutput,
    DefenseOutcome,
    InputFilter,
    ProgressFn,
    Split,
    TaskSpec,
    Trigger,
    Verdict,
    no_progress,
)
from arena.triggers import trigger_from_dict


class Strategy(ABC):
    kind: ClassVar[str] = "strategy"
    name: ClassVar[str]
    version: ClassVar[str]
    paper: ClassVar[str]
    deviations: ClassVar[str] = "none"
    space: ClassVar[Space] = Space()
    requires: ClassVar[tuple[type, ...]] = ()  # capability protocols of arena.capabilities the models must satisfy

    def required_capabilities(self) -> tuple[type, ...]:
        """What this configuration needs of a model (override where it depends on the hyperparameters)."""
        return self.requires

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = self.space.validate(params, owner=f"{self.kind} {self.name!r}")

    @property
    def spec_params(self) -> dict[str, Any]:
        """The parameters as a spec (and so a store key) records them (Space.key_params)."""
        return self.space.key_params(self.params)

    def check_task(self, task: TaskSpec) -> None:  # noqa: B027 (an optional hook: most strategies need no task check)
        """Checks that need the task (a trigger larger than the image...); raise ParamError."""

    def check(self, task: TaskSpec) -> None:
        """Every check against the task, the harness's and the strategy's own (`check_task`)."""
        self.check_task(task)

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def check_logits(model: nn.Module, task: TaskSpec, who: str, device: torch.device) -> None:
    probe = torch.zeros(2, *task.input_shape, device=device)
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            out = model(probe)
            model.train(was)
    except Exception as exc:  # a model that cannot even run on the task's inputs
        raise StrategyError(f"{who}: the model does not run on {tuple(task.input_shape)} inputs ({exc}).") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, task.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise StrategyError(f"{who}: the model outputs {shape} for 2 inputs; the task needs (2, {task.num_classes}).")


def _check_model_device(model: nn.Module, device: torch.device, who: str) -> None:
    """A returned model must live on the job's device: the harness never moves a strategy's work."""
    elsewhere = sorted({str(t.device) for t in [*model.parameters(), *model.buffers()] if t.device.type != device.type})
    if elsewhere:
        raise StrategyError(f"{who} returned a model with weights on {', '.join(elsewhere)}; the job computes on {device}. Build or move it to ctx.device.")


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackContext:
    """All an attacker gets (docs/design.md §1): its data split, the task, a seeded generator,
    and the device the job computes on. The split is there already; the model it publishes must
    be too (`build_model(task, generator, ctx.device)`). The generator is a CPU generator: draw
    on it and move the draw to `device` (arena/device.py says why)."""

    task: TaskSpec
    data: Split
    generator: torch.Generator
    progress: ProgressFn = no_progress

    @property
    def device(self) -> torch.device:
        return self.data.device


class Attacker(Strategy):
    """Base of all attacks: write `run`; `attack` checks what comes back."""

    kind: ClassVar[str] = "attacker"
    changes_architecture: ClassVar[bool] = False  # publishes `published_architecture(task)`, not the task's

    def published_architecture(self, task: TaskSpec) -> str:
        """The architecture name of the published model (a wrapper registered in arena.models.ARCHITECTURES)."""
        return task.architecture

    def check(self, task: TaskSpec) -> None:
        # the threat model's training budget: a recipe's own epochs (arena.attacks.TRAINING_SPACE) stay within it
        epochs = self.params.get("epochs", 0)
        if isinstance(epochs, int) and epochs > task.epochs:
            raise ParamError(f"Hyperparameter 'epochs' got {epochs}; the task's training budget is {task.epochs} epochs (0 trains for the whole budget).")
        self.check_task(task)

    @final
    def attack(self, task: TaskSpec, data: Split, generator: torch.Generator, progress: ProgressFn = no_progress) -> AttackOutput:
        self.check(task)
        out = self.run(AttackContext(task, Split(data.x.clone(), data.y.clone()), generator, progress))
        who = f"attacker {self.name!r}"
        device = data.device
        if not isinstance(out, AttackOutput) or not isinstance(out.model, nn.Module):
            raise StrategyError(f"{who} returned {type(out).__name__}, not an AttackOutput with a model.")
        if not all(isinstance(t, Trigger) for t in out.triggers):
            raise StrategyError(f"{who} returned triggers that are not Trigger objects.")
        if len({t.name for t in out.triggers}) != len(out.triggers):
            raise StrategyError(f"{who} returned triggers with duplicate names.")
        for t in out.triggers:  # the evaluator rebuilds each trigger from its JSON form in another process
            try:
                trigger_from_dict(t.to_dict())
            except Exception as exc:
                kind = getattr(t, "kind", "?")
                raise StrategyError(
                    f"{who} returned a trigger {t.name!r} of kind {kind!r} that cannot be rebuilt from its to_dict() ({type(exc).__name__}: {exc}); register its class as a trigger kind."
                ) from None
        _check_model_device(out.model, device, who)
        check_logits(out.model, task, who, device)
        published = self.published_architecture(task)
        if published != task.architecture and not self.changes_architecture:
            raise StrategyError(f"{who} publishes architecture {published!r} but does not declare changes_architecture.")
        if structure(build_model(dataclasses.replace(task, architecture=published))) != structure(out.model):
            raise StrategyError(f"{who} returned a model that is not the architecture {published!r} it publishes (task architecture {task.architecture!r}).")
        out.model.eval()
        return out

    @abstractmethod
    def run(self, ctx: AttackContext) -> AttackOutput:
        """Train (or otherwise produce) the published model and the triggers it answers to."""


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefenseContext:
    """All a defender gets besides the model (docs/design.md §1): the task, its clean split, a
    generator, and the device the job computes on, where the model and the split already are
    (a CPU generator, as for attackers)."""

    task: TaskSpec
    clean: Split
    generator: torch.Generator
    progress: ProgressFn = no_progress

    @property
    def device(self) -> torch.device:
        return self.clean.device


class Defender(Strategy):
    """Base of all defenses: write `run`; `defend` hands it a private copy of the model."""

    kind: ClassVar[str] = "defender"
    min_clean: ClassVar[int] = 0  # the fewest clean samples the defense can work with
    data_free: ClassVar[bool] = False  # uses no clean data: `run` is given an empty clean split (so "clean samples used" is 0 by construction)

    @final
    def defend(
        self,
        model: nn.Module,
        task: TaskSpec,
        clean: Split,
        generator: torch.Generator,
        progress: ProgressFn = no_progress,
    ) -> DefenseOutcome:
        who = f"defender {self.name!r}"
        if len(clean) < self.min_clean:
            raise ParamError(
                f"{who} needs at least {self.min_clean} clean samples but the clean budget gives "
                f"{len(clean)}; raise --clean-budget."
            )
        device = clean.device
        check_logits(model, task, f"{who} was given a model that does not fit the task", device)
        if (reason := not_applicable_reason(self, model)) is not None:  # the planner makes such a pair an n/a cell
            raise ParamError(f"{reason}: this pair is not applicable.")
        self.check_task(task)
        # Private copies: whatever the hook does to them, the caller's model and data are untouched.
        given = copy.deepcopy(model).eval()
        own = Split(clean.x[:0].clone(), clean.y[:0].clone()) if self.data_free else Split(clean.x.clone(), clean.y.clone())
        out = self.run(given, DefenseContext(task, own, generator, progress))
        if not isinstance(out, DefenseOutcome):
            raise StrategyError(f"{who} returned {type(out).__name__}, not a DefenseOutcome.")
        if out.model is not None:
            if not isinstance(out.model, nn.Module):
                raise StrategyError(f"{who} returned a repaired model of type {type(out.model).__name__}.")
            _check_model_device(out.model, device, who)
            check_logits(out.model, task, who, device)
            out.model.eval()
        if out.input_filter is not None and not isinstance(out.input_filter, InputFilter):
            raise StrategyError(f"{who} returned an input filter of type {type(out.input_filter).__name__}.")
        if out.verdict is not None and not isinstance(out.verdict, Verdict):
            raise StrategyError(f"{who} returned a verdict of type {type(out.verdict).__name__}.")
        return out

    @abstractmethod
    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        """Repair, filter or judge `model` (a private copy, free to modify) using only `ctx`."""
