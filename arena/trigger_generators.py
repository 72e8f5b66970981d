"""Trigger generator networks: small convolutional encoder–decoders that map an input to its own
trigger (a pattern, or a mask), the dynamic-trigger formula that combines them, and their JSON
form. The input-aware attack trains them (attackers/input_aware.py); `arena.triggers.
GeneratedTrigger` carries them to the evaluator, which rebuilds them from JSON in another process."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# keeps the tanh squash strictly inside (0, 1), as the input-aware paper's code does
_SQUASH_EPSILON = 1e-7


class TriggerGenerator(nn.Module):
    """A conv encoder–decoder from images (N, C, H, W) to maps (N, out_channels, H, W) in (0, 1).

    Encoder: a 3x3 conv, a 2x2 max-pool, a 3x3 conv of twice the width; decoder: nearest
    upsampling back to the input's size and two 3x3 convs, then tanh squashed into (0, 1). Every
    conv is batch-normalised; in eval mode (a published trigger) by its running statistics.
    With `sharpen`, the map is pushed towards 0 or 1 by tanh(20·m − 10) (the paper's mask
    "threshold"), so a mask is nearly binary yet still differentiable.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, sharpen: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.width, self.sharpen = in_channels, out_channels, width, sharpen
        self.down1 = _conv_block(in_channels, width)
        self.down2 = _conv_block(width, 2 * width)
        self.up1 = _conv_block(2 * width, width)
        self.up2 = _conv_block(width, out_channels)

    def shape_args(self) -> dict[str, Any]:
        """The constructor's arguments: with the state dict, all that rebuilding it needs."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "width": self.width, "sharpen": self.sharpen}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.down1(x)), 2)
        h = F.relu(self.down2(h))
        # nearest (not bilinear) upsampling: its CUDA backward is deterministic; an explicit size
        # restores odd sides that the pooling floored
        h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        # the last block is batch-normalised too (as in the paper's code): it keeps the tanh
        # below from saturating, where its gradient, and so the generator's learning, would die
        h = self.up2(F.relu(self.up1(h)))
        out = torch.tanh(h) / (2 + _SQUASH_EPSILON) + 0.5
        if self.sharpen:
            out = torch.tanh(out * 20 - 10) / (2 + _SQUASH_EPSILON) + 0.5
        return out


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 conv and batch norm (the paper's block; the activation is applied by the caller)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels, momentum=0.05))


def generator_to_dict(generator: TriggerGenerator) -> dict[str, Any]:
    """JSON form: the shape arguments and the weights as nested lists (float32 values survive
    the round trip through Python floats exactly)."""
    return {"shape": generator.shape_args(), "state": {name: t.detach().cpu().tolist() for name, t in generator.state_dict().items()}}


def generator_from_dict(data: dict[str, Any]) -> TriggerGenerator:
    """The generator whose `generator_to_dict` gave `data`, on the CPU, in eval mode, frozen."""
    shape = data["shape"]
    generator = TriggerGenerator(int(shape["in_channels"]), int(shape["out_channels"]), int(shape["width"]), bool(shape["sharpen"]))
    dtypes = {name: t.dtype for name, t in generator.state_dict().items()}  # batch norm counts its batches in int64
    generator.load_state_dict({name: torch.tensor(values, dtype=dtypes[name]) for name, values in data["state"].items()})
    return generator.eval().requires_grad_(False)


def dynamic_trigger(x: torch.Tensor, pattern: nn.Module, mask: nn.Module, source: torch.Tensor | None = None) -> torch.Tensor:
    """x' = x + M(s)·(G(s) − x), with s = x (the input's own trigger) or `source` (the trigger
    generated from other inputs, one per row: the paper's cross trigger)."""
    s = x if source is None else source
    return x + mask(s) * (pattern(s) - x)


def diversity_loss(x1: torch.Tensor, x2: torch.Tensor, out1: torch.Tensor, out2: torch.Tensor) -> torch.Tensor:
    """The input-aware paper's diversity loss: mean over pairs of ‖x1 − x2‖ / ‖g(x1) − g(x2)‖
    (root-mean-square distances): small when different inputs get different outputs."""
    images = (x1 - x2).pow(2).flatten(1).mean(1).sqrt()
    # a tiny floor inside the root: its gradient at zero (two equal outputs) would be infinite
    outputs = ((out1 - out2).pow(2).flatten(1).mean(1) + 1e-12).sqrt()
    return (images / (outputs + _SQUASH_EPSILON)).mean()
