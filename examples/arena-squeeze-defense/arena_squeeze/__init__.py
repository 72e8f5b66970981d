"""An example arena plugin: one defense class, exposed through the `arena.defenders` entry point."""

from __future__ import annotations

import torch
from torch import nn

# everything from arena's public API; the squeezers too: a plugin composes, it does not copy
from arena import Choice, DefenseContext, DefenseOutcome, Defender, Int, Space, median_smooth, reduce_bit_depth


class Squeeze(nn.Module):
    """Bit-depth reduction, then median smoothing, in front of a model."""

    def __init__(self, model: nn.Module, bits: int, window: int) -> None:
        super().__init__()
        self.model = model
        self.bits = bits
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(median_smooth(reduce_bit_depth(x, self.bits), self.window))


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
