"""An example arena plugin: one defense class, exposed through the `arena.defenders` entry point."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arena.params import Choice, Int, Space
from arena.protocol import DefenseOutcome
from arena.strategy import DefenseContext, Defender


class Squeeze(nn.Module):
    """Bit-depth reduction, then median smoothing, in front of a model."""

    def __init__(self, model: nn.Module, bits: int, window: int) -> None:
        super().__init__()
        self.model = model
        self.levels = 2**bits - 1
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.round(x * self.levels) / self.levels
        if self.window > 1:
            pad = self.window // 2
            patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), self.window)
            x = patches.view(x.shape[0], x.shape[1], self.window * self.window, -1).median(dim=2).values.view_as(x)
        return self.model(x)


class SqueezeInputs(Defender):
    """Squeeze every input (fewer bits per pixel, median smoothing) before the model sees it.

    Paper: Xu, Evans, Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
    Networks" (NDSS 2018), used here as input preprocessing against patch triggers rather than
    as a detector. Deviations: no detection threshold; the squeezed model is deployed as is.
    """

    name = "squeeze_inputs"
    version = "1"
    paper = "Xu, Evans, Qi. Feature Squeezing (NDSS 2018)"
    deviations = "preprocessing only, no detector"
    space = Space(
        bits=Int(3, 1, 8, help="bits per pixel kept"),
        window=Choice(3, options=(1, 3, 5), help="median filter size (1 = none)"),
    )

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        return DefenseOutcome(model=Squeeze(model, self.params["bits"], self.params["window"]).eval())
