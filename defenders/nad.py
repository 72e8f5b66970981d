from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from arena.capabilities import HasFeatureLayers
from arena.params import Float, Int, Space
from arena.protocol import DefenseOutcome
from arena.registry import register_defender
from arena.repair import FINE_TUNE_SPACE, fine_tune
from arena.strategy import Defender, DefenseContext
from arena.training import fit


def attention_map(feature: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """A feature map's attention map (N, positions): |F|^p averaged over channels, flattened and
    L2-normalised per sample (the mean and the code's sum differ by a factor the norm removes).
    A flat (N, D) feature has no channel axis: each unit is a position."""
    a = feature.abs().pow(p)
    a = a.mean(dim=1).flatten(1) if a.dim() > 2 else a
    return a / (a.norm(dim=1, keepdim=True) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float) -> torch.Tensor:
    """The attention-distillation distance of one layer, in the released code's form: the mean
    squared difference of the normalised attention maps (the paper writes the L2 norm of the
    difference; the code's betas are set for this form)."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher, p))


@contextmanager
def captured_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs of `model.feature_layers()` of the latest forward passes, shallow to deep, in a
    list the caller clears between passes; the forward hooks go when the block ends."""
    features: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: features.append(out)) for layer in model.feature_layers()]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def layer_betas(layers: int, beta_low: float, beta_mid: float, beta_high: float) -> list[float]:
    """The released code's three betas spread over `layers` feature layers: the shallowest gets
    `beta_low`, the deepest `beta_high`, those between `beta_mid` (two layers: low and high)."""
    if layers == 1:
        return [beta_high]
    return [beta_low] + [beta_mid] * (layers - 2) + [beta_high]


@register_defender
class NAD(Defender):
    """Neural Attention Distillation: fine-tune a teacher on clean data, then distil its attention maps into the backdoored model.

    Paper: Li, Lyu, Koren, Lyu, Li, Ma, "Neural Attention Distillation: Erasing Backdoor Triggers
    from Deep Neural Networks" (ICLR 2021); released code github.com/bboylyg/NAD.
    (1) Teacher: a copy of the backdoored model fine-tuned on the clean split (arena.repair's
    `fine_tune`, `steps`). (2) Student: the backdoored model itself, fine-tuned on the clean split
    (`distill_steps`, Adam at `distill_lr`, by default the teacher's rate, same batch size) with the loss
    CE + Σ_k β_k · AT(F_s^k, F_t^k) over the model's feature layers (HasFeatureLayers, read with
    forward hooks), where the attention map A(F) is |F|^p averaged over channels, flattened and
    L2-normalised, and AT is the mean squared difference of the student's and the teacher's maps
    (the released code's form; the paper writes the L2 norm of the difference). The moving part
    is the distillation: the teacher's attention pulls the student's deep features back to what
    clean data needs, which erases trigger features plain fine-tuning leaves (β = 0 is plain
    fine-tuning of the student). Its assumption is that the fine-tuned teacher has lost the
    backdoor's attention; a backdoor that survives clean fine-tuning (`sbl`) survives in the
    teacher and is distilled back.
    Deviations: Adam (arena.repair's fine-tuning) instead of SGD with Nesterov momentum, weight
    decay and the step schedule (0.1, then 0.01); budgets in optimiser steps, the student's twice
    the teacher's (the paper: 5-10 teacher epochs, 20 NAD epochs); no data augmentation (the
    paper's random crop and flip); the code's three betas (500 low, 1000 middle, 1000 high layer,
    on WRN-16-1's three groups) are spread over our feature layers: the shallowest gets
    `beta_low`, the deepest `beta_high`, those between `beta_mid` (badnets_cnn: conv1 500 and the
    last conv 1000; preact_resnet: its three blocks 500/1000/1000 as in the code, plus the conv
    head 1000; on 8x8 inputs its last block and head give 1x1 maps, whose normalised attention
    is constant, so their terms vanish); attention maps average channels instead of summing them
    (equal after the norm); the student's learning rate is a knob of its own (`distill_lr`).
    On digits at the defaults the teacher keeps a BadNet (as `fine_tuning` does), so NAD removes
    little of it; with a teacher fine-tuned at `lr` 1e-2 the distillation takes the student's ASR
    from about 0.96 (β = 0) to about 0.6 (tests/test_defense_nad.py).
    """

    name = "nad"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Li, Lyu, Koren, Lyu, Li, Ma. Neural Attention Distillation: Erasing Backdoor Triggers from Deep Neural Networks (ICLR 2021)"
    deviations = (
        "Adam (arena.repair fine-tuning) instead of SGD with Nesterov momentum, weight decay and step schedule; budgets in steps (student twice the teacher's); "
        "no data augmentation; the student's learning rate is its own knob; "
        "the code's three betas spread over our 2-4 feature layers (shallowest beta_low, deepest beta_high, between beta_mid); channel mean instead of sum"
    )
    min_clean = 10
    requires = (HasFeatureLayers,)
    space = FINE_TUNE_SPACE | Space(
        distill_steps=Int(600, 1, 1_000_000, help="optimiser steps of the student's attention distillation (the teacher's fine-tuning is `steps`)", search=(100, 2000)),
        distill_lr=Float(1e-3, 1e-6, 1.0, log=True, help="Adam learning rate of the student's distillation (the teacher's is `lr`; the paper uses one for both)", search=(1e-4, 1e-2)),
        p=Float(2.0, 0.0, 16.0, low_open=True, help="power of |F| in the attention map (paper: 2)"),
        beta_low=Float(500.0, 0.0, 1e7, help="distillation weight of the shallowest feature layer (code: 500)", search=(50.0, 5000.0)),
        beta_mid=Float(1000.0, 0.0, 1e7, help="distillation weight of the feature layers between the shallowest and the deepest (code: 1000)", search=(100.0, 10000.0)),
        beta_high=Float(1000.0, 0.0, 1e7, help="distillation weight of the deepest feature layer (code: 1000)", search=(100.0, 10000.0)),
    )

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        p = self.params
        ctx.progress("teacher", 0, 2)
        teacher = fine_tune(copy.deepcopy(model), ctx.clean, p, ctx.generator).eval()
        for weight in teacher.parameters():
            weight.requires_grad_(False)
        ctx.progress("attention distillation", 1, 2)
        betas = layer_betas(len(model.feature_layers()), p["beta_low"], p["beta_mid"], p["beta_high"])
        per_epoch = math.ceil(len(ctx.clean) / p["batch_size"])
        epochs = max(1, round(p["distill_steps"] / per_epoch))
        with captured_features(model) as student_features, captured_features(teacher) as teacher_features:

            def distillation_loss(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                student_features.clear()
                teacher_features.clear()
                loss = F.cross_entropy(student(x), y)
                with torch.no_grad():
                    teacher(x)
                for beta, fs, ft in zip(betas, student_features, teacher_features):
                    if beta > 0:
                        loss = loss + beta * attention_loss(fs, ft, p["p"])
                return loss

            fit(model, ctx.clean, epochs=epochs, lr=p["distill_lr"], batch_size=p["batch_size"], generator=ctx.generator, stage="attention distillation", loss_fn=distillation_loss)
        ctx.progress("attention distillation", 2, 2)
        return DefenseOutcome(model=model)
