"""Model inversion: labelled inputs recovered from a model alone, by optimising inputs until the
model assigns them their labels under an image prior.

A player that holds a model but no data of its own gets a substitute training set this way:
DeepInspect's detection uses no clean data (docs/design.md §1: the defender's clean split serves
only its patching), and TrojanNN's attacker reverse-engineers the data it retrains on
(`retrain_data: inverted`). Both call `invert_model`; they differ in where the inputs start, the
prior, the learning rate and the input noise, which they pass in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arena.protocol import Split
from arena.training import frozen, model_device


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image: (N,)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def batch_total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels over the whole batch at once: a scalar,
    `total_variation(x).mean()` up to rounding (TrojanNN's prior)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# The prior's weights are set for an 8x8 image and scaled by the pixel count: its terms are
# per-pixel means, so without the scale their pull on each pixel would weaken as images grow
# while the classifier's does not (on 28x28 Fashion-MNIST the unscaled prior left cluttered
# inverted images and the backdoored seed-0 model unflagged; scaled, it is flagged).
PRIOR_REFERENCE_PIXELS = 64


def inversion_prior(x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """DeepInspect's image prior, per image: total variation (smooth strokes), L2 (a dark
    background) and x·(1 − x) (pixels near 0 or 1, as in the ink-on-paper images of the tasks),
    weighted by `tv_weight`, `l2_weight` and `binary_weight` of `p`."""
    flat = x.flatten(1)
    scale = flat.shape[1] / PRIOR_REFERENCE_PIXELS
    return scale * (p["tv_weight"] * total_variation(x) + p["l2_weight"] * flat.pow(2).mean(1) + p["binary_weight"] * (flat * (1 - flat)).mean(1))


def _uniform_start(n: int, input_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.logit(torch.rand(n, *input_shape, generator=generator).clamp(1e-3, 1 - 1e-3))


def _grey_start(n: int, input_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, *input_shape, generator=generator) * 0.5


# Where the inputs start, as the sigmoid parameterisation's raw values: "uniform" pixels uniform
# in [0, 1] (DeepInspect); "grey" a grey image plus noise, raw values N(0, 0.5²) (TrojanNN).
STARTS: dict[str, Callable[[int, tuple[int, ...], torch.Generator], torch.Tensor]] = {"uniform": _uniform_start, "grey": _grey_start}


def invert_model(
    model: nn.Module,
    num_classes: int,
    per_class: int,
    input_shape: tuple[int, ...],
    *,
    steps: int,
    lr: float,
    prior: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    start: str = "uniform",
    noise: float | None = None,
    prior_first: bool = False,
) -> Split:
    """`per_class` inputs per label, labels in order, optimised against the frozen model.

    The inputs are the sigmoid of raw values (so pixels stay in [0, 1]) drawn by `start` (see
    STARTS); Adam at `lr` minimises, for `steps` steps, CE(f(x), label) + prior(x), where `prior`
    maps the batch to the scalar loss term. With `noise` (a std, 0 included) fresh Gaussian noise
    is drawn at every step and added to the inputs the model sees, so the recovered samples sit
    inside their class's region rather than on its edge; with None nothing is drawn.
    `prior_first` evaluates the prior before the model's forward pass (TrojanNN's order; DeepInspect
    runs the model first): autograd sums the two gradients reaching x in reverse order of their
    creation, so the order decides the last bits of every step.
    """
    device = model_device(model)
    labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    raw = STARTS[start](len(labels), tuple(input_shape), generator).to(device).requires_grad_()  # drawn on the CPU generator
    opt = torch.optim.Adam([raw], lr=lr)
    with frozen(model):
        for _ in range(steps):
            x = torch.sigmoid(raw)
            early = prior(x) if prior_first else None
            seen = x if noise is None else x + noise * torch.randn(x.shape, generator=generator).to(device)
            loss = F.cross_entropy(model(seen), labels) + (prior(x) if early is None else early)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return Split(torch.sigmoid(raw).detach(), labels)
