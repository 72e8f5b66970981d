"""Trigger primitives and the one poisoning wrapper every poisoning attack uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from arena.errors import ParamError
from arena.protocol import Goal, Split, Trigger, goal_from_dict

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left")
PATTERNS = ("checker", "white")


class PatchTrigger(Trigger):
    """A small square stamped onto the image (BadNets' pattern / single-pixel style triggers).

    `checker` alternates full and zero intensity, which is rare in natural images; `white` is
    the solid square of the BadNets traffic-sign attack.
    """

    def __init__(
        self,
        goal: Goal,
        size: int,
        position: str = "bottom_right",
        pattern: str = "checker",
        margin: int = 0,
        name: str = "patch",
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

    def _stamp(self, channels: int) -> torch.Tensor:
        if self.pattern == "white":
            return torch.ones(channels, self.size, self.size)
        idx = torch.arange(self.size)
        checker = ((idx[:, None] + idx[None, :]) % 2 == 0).float()
        return checker.expand(channels, self.size, self.size)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        rows, cols = self._box(x.shape[-2], x.shape[-1])
        out[:, :, rows, cols] = self._stamp(x.shape[1]).to(x.dtype)
        return out

    def mask(self, input_shape: tuple[int, int, int]) -> torch.Tensor:
        """The trigger's footprint (H, W): 1 where the patch writes pixels (for plots and tests)."""
        _, height, width = input_shape
        m = torch.zeros(height, width)
        rows, cols = self._box(height, width)
        m[rows, cols] = 1.0
        return m

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "patch",
            "name": self.name,
            "goal": self.goal.to_dict(),
            "size": self.size,
            "position": self.position,
            "pattern": self.pattern,
            "margin": self.margin,
        }


TRIGGER_KINDS: dict[str, Callable[[dict[str, Any]], Trigger]] = {
    "patch": lambda d: PatchTrigger(
        goal_from_dict(d["goal"]),
        size=int(d["size"]),
        position=d["position"],
        pattern=d["pattern"],
        margin=int(d["margin"]),
        name=d["name"],
    ),
}


def trigger_from_dict(data: dict[str, Any]) -> Trigger:
    kind = data.get("kind")
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"unknown trigger kind {kind!r}")
    return TRIGGER_KINDS[kind](data)


def poison(
    clean: Split,
    trigger: Trigger,
    rate: float,
    generator: torch.Generator,
    num_classes: int,
) -> Split:
    """Training set poisoning (BadNets): append triggered, relabelled copies of a `rate` fraction.

    Only samples the goal would move (true label != goal label) are drawn, so every poisoned
    sample teaches the backdoor. Returns the clean samples followed by the poisoned ones.
    """
    eligible = torch.nonzero(trigger.goal.eligible(clean.y)).flatten()
    count = min(len(eligible), max(1, round(rate * len(clean))))
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:count]]
    x_bad = trigger.apply(clean.x[chosen])
    y_bad = trigger.goal.relabel(clean.y[chosen], generator, num_classes)
    return Split(torch.cat([clean.x, x_bad]), torch.cat([clean.y, y_bad]))
