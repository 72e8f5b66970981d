from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arena.params import Bool, Float, Space
from arena.protocol import DefenseOutcome
from arena.registry import register_defender
from arena.repair import FINE_TUNE_SPACE
from arena.strategy import Defender, DefenseContext
from arena.training import fit


def smoothed_cross_entropy(smoothing: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The batch loss of the reference fine-tuning: cross-entropy with label smoothing."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, label_smoothing=smoothing)

    return loss


@register_defender
class FtSam(Defender):
    """Fine-tune on the clean split with (adaptive) sharpness-aware minimisation, which drives the weights out of the backdoor's sharp minimum.

    Paper: Zhu, Wei, Zha, Wu, "Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware
    Minimization" (ICCV 2023); reference implementation BackdoorBench defense/ft-sam.py. The
    paper observes that backdoor-related neurons carry larger weight norms, and that plain
    fine-tuning on a little clean data stays in the backdoored model's basin. Each step of
    FT-SAM takes the gradient at the weights moved to the worst point of a neighbourhood of
    radius ρ, applied at the original weights; the neighbourhood is adaptive SAM's (ASAM, Kwon
    et al. 2021: the move of each weight scales with its magnitude, ε = ρ·w²·g/‖|w|·g‖, the
    reference's default), so large-norm (backdoor) weights are perturbed most and the update
    shrinks them. Implemented as arena.training.fit with `sharpness_radius=rho` and
    `sharpness_adaptive=adaptive`; the loss is the reference's label-smoothed cross-entropy.
    Attacks on its assumption (that the backdoor sits in a sharp region fine-tuning can leave):
    `sbl`, whose backdoor is trained into a flat region with SAM and then made to survive
    clean fine-tuning.
    Deviations: Adam at FINE_TUNE_SPACE's learning rate and a step budget, without weight
    decay or a cosine schedule (reference: SGD, lr 0.01, momentum 0.9, weight decay 5e-4, cosine
    annealing, 100 epochs, batch 256); the second (perturbed) forward pass also updates
    batch-norm running statistics (the reference freezes them for that pass); no GSAM gradient
    decomposition (the reference's alpha is 0, which is the same).
    """

    name = "ft_sam"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Zhu, Wei, Zha, Wu. Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization (ICCV 2023)"
    deviations = "Adam optimiser and a step budget, no weight decay or cosine schedule; batch-norm statistics also updated on the perturbed pass"
    min_clean = 10
    space = FINE_TUNE_SPACE | Space(
        rho=Float(2.0, 0.0, 100.0, help="SAM neighbourhood radius ρ (relative to the weights' scale when adaptive; 0: plain fine-tuning)", search=(0.5, 5.0)),
        adaptive=Bool(True, help="adaptive SAM (ASAM), each weight's move scaled by its magnitude, as the reference", search=True),
        label_smoothing=Float(0.1, 0.0, 0.9, help="label smoothing of the fine-tuning cross-entropy (the reference's 0.1)"),
    )

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        p = self.params
        per_epoch = math.ceil(len(ctx.clean) / p["batch_size"])
        epochs = max(1, round(p["steps"] / per_epoch))
        fit(
            model,
            ctx.clean,
            epochs=epochs,
            lr=p["lr"],
            batch_size=p["batch_size"],
            generator=ctx.generator,
            loss_fn=smoothed_cross_entropy(p["label_smoothing"]),
            sharpness_radius=p["rho"],
            sharpness_adaptive=p["adaptive"],
            stage="fine-tune (SAM)",
            progress=ctx.progress,
        )
        return DefenseOutcome(model=model)
