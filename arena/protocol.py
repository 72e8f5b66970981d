"""Protocol types exchanged across the information boundary (docs/design.md §1-2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from arena.errors import ParamError


@dataclass(frozen=True)
class TaskSpec:
    """What both players know about the task: no data, no trigger, no opponent."""

    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width), pixel values in [0, 1]
    architecture: str
    epochs: int  # the training budget of an attacker; defenders scale their own work from it

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "architecture": self.architecture,
            "epochs": self.epochs,
        }


@dataclass(frozen=True)
class Split:
    """Labelled images held as tensors: x is float (N, C, H, W) in [0, 1], y is int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"split has {self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.y[index])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> Split:
        """The split on `device` (itself when it is there already)."""
        return self if self.x.device == torch.device(device) else Split(self.x.to(device), self.y.to(device))


# ---------------------------------------------------------------------------------------------
# Goals: what counts as success for a trigger.


class Goal(ABC):
    """Which label a triggered input should get, and which inputs count for ASR."""

    kind: str

    @abstractmethod
    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Goal label per true label (-1 where the goal is 'any wrong label')."""

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Inputs that count for ASR: those whose true label differs from the goal label."""
        return self.targets(y) != y

    @abstractmethod
    def relabel(self, y: torch.Tensor, generator: torch.Generator, num_classes: int) -> torch.Tensor:
        """Poisoned labels for training samples with true labels y."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def check(self, num_classes: int) -> None:  # noqa: B027 (an optional hook: goals without labels check nothing)
        """Raise ParamError when the goal names labels outside 0..num_classes-1."""


@dataclass(frozen=True)
class AllToOne(Goal):
    target: int
    kind: str = field(default="all_to_one", init=False)

    def check(self, num_classes: int) -> None:
        if not 0 <= self.target < num_classes:
            raise ParamError(f"target {self.target} is not a label of the task (labels 0..{num_classes - 1}).")

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, self.target)

    def relabel(self, y: torch.Tensor, generator: torch.Generator, num_classes: int) -> torch.Tensor:
        return self.targets(y)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target}


@dataclass(frozen=True)
class LabelMap(Goal):
    mapping: tuple[int, ...]  # mapping[y] is the goal label of an input of true label y
    kind: str = field(default="label_map", init=False)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.mapping, dtype=torch.long, device=y.device)[y]

    def check(self, num_classes: int) -> None:
        """A label map must be a function over the labels: one goal label per label, each a label."""
        if len(self.mapping) != num_classes:
            raise ParamError(
                f"label map {list(self.mapping)} has {len(self.mapping)} entries; the task has {num_classes} labels, "
                f"so it needs exactly one goal label per label 0..{num_classes - 1}."
            )
        bad = [v for v in self.mapping if not 0 <= v < num_classes]
        if bad:
            raise ParamError(f"label map {list(self.mapping)} sends labels to {bad}, outside 0..{num_classes - 1}.")
        if all(v == y for y, v in enumerate(self.mapping)):
            raise ParamError(f"label map {list(self.mapping)} is the identity: it moves no label, so there is no backdoor.")

    def relabel(self, y: torch.Tensor, generator: torch.Generator, num_classes: int) -> torch.Tensor:
        return self.targets(y)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mapping": list(self.mapping)}


@dataclass(frozen=True)
class Untargeted(Goal):
    """Any wrong label is success; ASR is 1 - A_backdoor / A_clean (Fine-Pruning)."""

    kind: str = field(default="untargeted", init=False)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, -1)

    def relabel(self, y: torch.Tensor, generator: torch.Generator, num_classes: int) -> torch.Tensor:
        # a uniformly random label other than the true one
        shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)  # drawn on the CPU generator
        return (y + shift) % num_classes

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


def goal_from_dict(data: dict[str, Any]) -> Goal:
    kind = data.get("kind")
    if kind == "all_to_one":
        return AllToOne(int(data["target"]))
    if kind == "label_map":
        return LabelMap(tuple(int(v) for v in data["mapping"]))
    if kind == "untargeted":
        return Untargeted()
    raise ValueError(f"unknown goal kind {kind!r}")


class Trigger(ABC):
    """Maps inputs to triggered inputs and says what counts as success.

    A `probe` trigger is measured but is not an attack: e.g. one half of a trigger combination,
    which should *not* fire. Its success rate is reported and left out of the headline ASR.
    """

    kind: ClassVar[str]  # the registry name of the class (arena.triggers.TRIGGERS); its JSON form carries it
    name: str
    goal: Goal
    probe: bool = False

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Triggered copies of the images x (N, C, H, W); x itself is left unchanged."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON form with `kind`, enough for `from_dict` to rebuild the trigger (`triggers.trigger_from_dict`)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Trigger:
        """The trigger whose `to_dict` gave `data`."""


# ---------------------------------------------------------------------------------------------
# What strategies return.


@dataclass
class AttackOutput:
    """An attacker's result: the model it publishes and the triggers only the evaluator sees."""

    model: nn.Module
    triggers: list[Trigger]


@dataclass(frozen=True)
class Verdict:
    """A model-level detection result."""

    flagged: bool
    score: float
    labels: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "score": self.score, "labels": list(self.labels)}


class InputFilter(ABC):
    """A run-time filter: True for inputs the deployed system accepts."""

    @abstractmethod
    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Boolean tensor (N,), True where the input is accepted."""


@dataclass
class DefenseOutcome:
    """A defender's result: any of a repaired model, an input filter and a verdict."""

    model: nn.Module | None = None
    input_filter: InputFilter | None = None
    verdict: Verdict | None = None


# A progress sink: (stage, steps done, steps total). Strategies report through it; the CLI
# draws it. It carries no data, so it cannot leak across the boundary.
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    return None
