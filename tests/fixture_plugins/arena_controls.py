"""Positive controls for the adaptive game (Zimmermann et al., NeurIPS 2022: plant a weakness the
search must find). `CornerFilter` rejects inputs that carry a checkerboard patch in the corners
it watches, and nothing else: a defense with a known hole, the corners it does not watch."""

from __future__ import annotations

import torch
from torch import nn

from arena import Choice, Defender, DefenseOutcome, InputFilter, Space

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
WATCH = {**{c: (c,) for c in CORNERS}, "all_but_top_left": CORNERS[1:]}
SIZE, MARGIN = 3, 1  # the patch attacks' default geometry


def _box(corner: str, height: int, width: int) -> tuple[slice, slice]:
    rows = slice(height - MARGIN - SIZE, height - MARGIN) if corner.startswith("bottom") else slice(MARGIN, MARGIN + SIZE)
    cols = slice(width - MARGIN - SIZE, width - MARGIN) if corner.endswith("right") else slice(MARGIN, MARGIN + SIZE)
    return rows, cols


class _Filter(InputFilter):
    def __init__(self, corners: tuple[str, ...]) -> None:
        self.corners = corners

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(SIZE, device=x.device)
        on = (idx[:, None] + idx[None, :]) % 2 == 0  # the checkerboard's white pixels
        accepted = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for corner in self.corners:
            rows, cols = _box(corner, x.shape[-2], x.shape[-1])
            patch = x[:, :, rows, cols].amin(dim=1)  # (N, SIZE, SIZE)
            stamped = (patch[:, on] >= 0.99).all(dim=1) & (patch[:, ~on] <= 0.01).all(dim=1)
            accepted &= ~stamped
        return accepted


class CornerFilter(Defender):
    """Rejects inputs with a checkerboard patch in the watched corners (a planted hole: the others)."""

    name = "corner_filter"
    version = "1"
    paper = "a positive control for the adaptive game (tests only)"
    space = Space(corner=Choice("all_but_top_left", options=tuple(WATCH), help="the corners watched"))

    def run(self, model: nn.Module, ctx) -> DefenseOutcome:  # type: ignore[no-untyped-def]
        return DefenseOutcome(input_filter=_Filter(WATCH[self.params["corner"]]))
