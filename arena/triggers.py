"""Trigger primitives and the one poisoning wrapper every poisoning attack uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from arena.errors import ParamError
from arena.protocol import AllToOne, Goal, Split, Trigger, goal_from_dict
from arena.registry import RegistrationError, Registry


def _validate_trigger_class(cls: Any) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Trigger):
        raise RegistrationError(f"{cls!r} is not a subclass of arena.Trigger")
    if "from_dict" not in vars(cls) or "to_dict" not in vars(cls):
        raise RegistrationError(f"trigger kind {cls.kind!r}: {cls.__qualname__} must define its own to_dict and from_dict")


# Trigger kinds by the `kind` their JSON form carries (docs/design.md §10): a new kind is one class,
# registered here or published under the entry point group `arena.triggers`.
TRIGGERS: Registry[type[Trigger]] = Registry("trigger kind", group="arena.triggers", builtins=("arena.triggers",), key=lambda cls: cls.kind, validate=_validate_trigger_class)
register_trigger = TRIGGERS.register

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left")
PATTERNS = ("checker", "white", "triangle")


def _common(trigger: Trigger) -> dict[str, Any]:
    return {"kind": trigger.kind, "name": trigger.name, "goal": trigger.goal.to_dict(), "probe": trigger.probe}


def _probe(d: dict[str, Any]) -> bool:
    return bool(d.get("probe", False))


@register_trigger
class PatchTrigger(Trigger):
    """A small square stamped onto the image (BadNets' pattern / single-pixel style triggers).

    `checker` alternates full and zero intensity, which is rare in natural images; `white` is
    the solid square of the BadNets traffic-sign attack; `triangle` fills the lower-left half
    of the square (the trigger-combination attack's triangle) and leaves the rest untouched.
    """

    kind = "patch"

    def __init__(
        self,
        goal: Goal,
        size: int,
        position: str = "bottom_right",
        pattern: str = "checker",
        margin: int = 0,
        name: str = "patch",
        probe: bool = False,
    ) -> None:
        if position not in POSITIONS:
            raise ParamError(f"Trigger position {position!r} is not one of {', '.join(POSITIONS)}.")
        if pattern not in PATTERNS:
            raise ParamError(f"Trigger pattern {pattern!r} is not one of {', '.join(PATTERNS)}.")
        if size < 1:
            raise ParamError(f"Trigger size must be at least 1 pixel, got {size}.")
        self.goal = goal
        self.size = size
        self.position = position
        self.pattern = pattern
        self.margin = margin
        self.name = name
        self.probe = probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        """Raise ParamError when the patch (with its margin) does not fit in the image."""
        _, height, width = input_shape
        need = self.size + self.margin
        if need > min(height, width):
            raise ParamError(
                f"Trigger of size {self.size} with margin {self.margin} does not fit in a "
                f"{height}x{width} image; use trigger_size + trigger_margin <= {min(height, width)}."
            )

    def _box(self, height: int, width: int) -> tuple[slice, slice]:
        s, m = self.size, self.margin
        rows = slice(height - m - s, height - m) if self.position.startswith("bottom") else slice(m, m + s)
        cols = slice(width - m - s, width - m) if self.position.endswith("right") else slice(m, m + s)
        return rows, cols

    def _shape(self) -> torch.Tensor:
        """(size, size): 1 where the patch writes a pixel."""
        if self.pattern == "triangle":
            return torch.ones(self.size, self.size).tril()
        return torch.ones(self.size, self.size)

    def _stamp(self, channels: int) -> torch.Tensor:
        if self.pattern == "checker":
            idx = torch.arange(self.size)
            return ((idx[:, None] + idx[None, :]) % 2 == 0).float().expand(channels, self.size, self.size)
        return torch.ones(channels, self.size, self.size)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        rows, cols = self._box(x.shape[-2], x.shape[-1])
        shape = self._shape().bool().to(x.device)
        out[:, :, rows, cols] = torch.where(shape, self._stamp(x.shape[1]).to(x.device, x.dtype), out[:, :, rows, cols])
        return out

    def mask(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        """The trigger's footprint (H, W): 1 where the patch writes pixels (for plots and tests)."""
        _, height, width = input_shape
        m = torch.zeros(height, width)
        rows, cols = self._box(height, width)
        m[rows, cols] = self._shape()
        return m

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "size": self.size, "position": self.position, "pattern": self.pattern, "margin": self.margin}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchTrigger:
        return cls(goal_from_dict(d["goal"]), size=int(d["size"]), position=d["position"], pattern=d["pattern"], margin=int(d["margin"]), name=d["name"], probe=_probe(d))


def square_footprint(input_shape: tuple[int, int, int], size: int, margin: int, position: str = "bottom_right") -> torch.Tensor:
    """(H, W) footprint of a size x size square in a corner, `margin` from the border, with the
    patch trigger's geometry and fit check (for attacks that put their own pattern there)."""
    square = PatchTrigger(AllToOne(0), size, position, "white", margin)  # the goal is not used
    square.check_fits(input_shape)
    return square.mask(input_shape)


def blend(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """The masked-trigger formula x' = (1 − mask)·x + mask·pattern (mask (H, W), pattern (C, H, W)):
    the Trojaning attack's and blended triggers, and every reverse-engineered trigger."""
    return (1 - mask) * x + mask * pattern


@register_trigger
class MaskedTrigger(Trigger):
    """x' = (1 − mask)·x + mask·pattern, with an arbitrary mask in [0, 1] and pattern.

    A blended trigger is a constant mask alpha over a full-image pattern (Chen et al. 2017); the
    Trojaning attack's trigger is an optimised pattern under a fixed mask (Liu et al. 2018).
    """

    kind = "masked"

    def __init__(self, goal: Goal, mask: torch.Tensor, pattern: torch.Tensor, name: str, probe: bool = False) -> None:
        if mask.dim() != 2 or pattern.dim() != 3 or tuple(pattern.shape[1:]) != tuple(mask.shape):
            raise ValueError(f"mask (H, W) and pattern (C, H, W) disagree: {tuple(mask.shape)} vs {tuple(pattern.shape)}")
        if float(mask.min()) < 0 or float(mask.max()) > 1 or float(pattern.min()) < 0 or float(pattern.max()) > 1:
            raise ValueError("mask and pattern values must lie in [0, 1]")
        self.goal = goal
        self.mask_values = mask.detach().float().clone()
        self.pattern = pattern.detach().float().clone()
        self.name = name
        self.probe = probe

    def check_fits(self, input_shape: tuple[int, int, int]) -> None:
        if tuple(self.pattern.shape) != tuple(input_shape):
            raise ParamError(f"trigger pattern of shape {tuple(self.pattern.shape)} does not match images of shape {tuple(input_shape)}.")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return blend(x, self.mask_values.to(x.device, x.dtype), self.pattern.to(x.device, x.dtype))

    def mask(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        return self.mask_values.clone()

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "mask": self.mask_values.tolist(), "pattern": self.pattern.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskedTrigger:
        return cls(goal_from_dict(d["goal"]), torch.tensor(d["mask"], dtype=torch.float32), torch.tensor(d["pattern"], dtype=torch.float32), d["name"], _probe(d))


def _desaturate(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True).expand_as(x) if x.shape[1] > 1 else x


def _radius2(x: torch.Tensor) -> torch.Tensor:
    """Squared distance from the image centre, 0 at the centre and 1 at the corners."""
    h, w = x.shape[-2:]
    rows = torch.linspace(-1, 1, h, device=x.device).view(-1, 1)
    cols = torch.linspace(-1, 1, w, device=x.device).view(1, -1)
    return ((rows**2 + cols**2) / 2).to(x.dtype)


# Instagram-style filters, written for images in [0, 1] of any channel count. Each is a fixed,
# smooth, whole-image transform: the trigger is a style, not a pixel pattern.
FILTERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # Gotham: desaturated, hard contrast, crushed shadows
    "gotham": lambda x: (((_desaturate(x) - 0.5) * 1.6 + 0.5).clamp(0, 1)) ** 1.4,
    # Nashville: faded film look: lifted blacks, softened whites, brighter mid-tones
    "nashville": lambda x: 0.18 + 0.72 * x.clamp(0, 1) ** 0.8,
    # Vignette: the borders glow towards grey while the centre keeps its contrast
    "vignette": lambda x: x * (1 - 0.6 * _radius2(x)) + 0.45 * _radius2(x),
}


@register_trigger
class FilterTrigger(Trigger):
    """A feature-space trigger: a fixed image filter applied to the whole input."""

    kind = "filter"

    def __init__(self, goal: Goal, filter_name: str, name: str = "filter", probe: bool = False) -> None:
        if filter_name not in FILTERS:
            raise ParamError(f"Filter {filter_name!r} is not one of {', '.join(FILTERS)}.")
        self.goal = goal
        self.filter_name = filter_name
        self.name = name
        self.probe = probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return FILTERS[self.filter_name](x).clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "filter": self.filter_name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FilterTrigger:
        return cls(goal_from_dict(d["goal"]), d["filter"], d["name"], _probe(d))


@register_trigger
class CompositeTrigger(Trigger):
    """Several triggers applied in turn, with a goal of its own (a trigger combination)."""

    kind = "composite"

    def __init__(self, goal: Goal, parts: list[Trigger], name: str, probe: bool = False) -> None:
        if not parts:
            raise ValueError("a composite trigger needs at least one part")
        self.goal = goal
        self.parts = list(parts)
        self.name = name
        self.probe = probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part.apply(x)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {**_common(self), "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompositeTrigger:
        return cls(goal_from_dict(d["goal"]), [trigger_from_dict(p) for p in d["parts"]], d["name"], _probe(d))


def trigger_from_dict(data: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from its JSON form, by the class registered for its `kind`."""
    return TRIGGERS.get(str(data.get("kind"))).from_dict(data)


def trigger_kinds(data: dict[str, Any]) -> list[str]:
    """The trigger kinds a trigger's JSON form uses, its parts' included (for the manifest's origins)."""
    return [str(data.get("kind")), *(kind for part in data.get("parts", []) for kind in trigger_kinds(part))]


def poisoned_copies(
    clean: Split,
    trigger: Trigger,
    rate: float,
    generator: torch.Generator,
    num_classes: int,
    relabel: bool = True,
) -> Split:
    """Triggered copies of a `rate` fraction of `clean` (of its size), relabelled by the goal.

    With `relabel`, only samples the goal would move (true label != goal label) are drawn, so
    every copy teaches the backdoor. Without it (a negative example: a trigger that must not
    fire), any sample may be drawn and it keeps its true label.
    """
    pool = trigger.goal.eligible(clean.y) if relabel else torch.ones_like(clean.y, dtype=torch.bool)
    eligible = torch.nonzero(pool).flatten()
    count = min(len(eligible), max(1, round(rate * len(clean))))
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:count]]
    x_bad = trigger.apply(clean.x[chosen])
    y_bad = trigger.goal.relabel(clean.y[chosen], generator, num_classes) if relabel else clean.y[chosen]
    return Split(x_bad, y_bad)


def concat(*splits: Split) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def poison(
    clean: Split,
    trigger: Trigger,
    rate: float,
    generator: torch.Generator,
    num_classes: int,
) -> Split:
    """Training set poisoning (BadNets): the clean samples followed by triggered, relabelled
    copies of a `rate` fraction of them (see `poisoned_copies`)."""
    return concat(clean, poisoned_copies(clean, trigger, rate, generator, num_classes))
