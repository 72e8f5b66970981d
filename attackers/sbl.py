from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arena.attacks import PATCH_SPACE, TRAINING_SPACE, patch_trigger, recipe_epochs, train_from_scratch
from arena.errors import ParamError
from arena.params import Float, Space
from arena.protocol import AttackOutput, Split, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import fit
from arena.triggers import poison

FISHER_SAMPLES = 1024  # task 1 samples in EWC's Fisher estimate


def fisher_diagonal(model: nn.Module, data: Split) -> list[torch.Tensor]:
    """EWC's importance of each weight for `data`: the mean over samples of p(y|x)·(∂ log p(y|x)/∂θ)²
    at the samples' own labels (the diagonal empirical Fisher, each sample weighted by the
    probability the model gives its label, as the SBL reference code computes it), one tensor
    per trainable weight of `model`, in its order."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    for i in range(len(data)):  # one sample at a time, as the reference code does
        log_likelihood = F.log_softmax(model(data.x[i : i + 1]), dim=1).gather(1, data.y[i : i + 1, None]).sum()
        grads = torch.autograd.grad(log_likelihood, params)
        weight = log_likelihood.detach().exp()
        for f, g in zip(fisher, grads):
            f.add_(weight * g.pow(2))
    model.train(was_training)
    return [f / len(data) for f in fisher]


def ewc_loss(anchor: list[torch.Tensor], fisher: list[torch.Tensor], weight: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy plus EWC's penalty weight·Σ F·(θ − θ*)²: moving a weight costs in proportion
    to how much task 1's solution θ* needs it."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        trained = [p for p in model.parameters() if p.requires_grad]
        penalty = sum(((p - a).pow(2) * f).sum() for p, a, f in zip(trained, anchor, fisher))
        return F.cross_entropy(model(x), y) + weight * penalty

    return loss


@register_attacker
class SequentialBackdoorLearning(Attacker):
    """Sequential backdoor learning: plant a BadNets backdoor with SAM, then fine-tune it on clean data under EWC.

    Paper: Pham, Ta, Tran, Doan, "Flatness-aware Sequential Learning Generates Resilient Backdoors"
    (ECCV 2024). Fine-tuning defenses remove backdoors through catastrophic forgetting: training
    on clean data pushes the weights out of the backdoor region. SBL casts poisoning as continual
    learning of two tasks. Task 1: train from scratch on the attacker's data plus triggered,
    relabelled copies (BadNets), with sharpness-aware minimisation (SAM, radius
    `sharpness_radius`) so the backdoored solution lies in a flat region. Task 2: continue on
    clean data alone (a `clean_holdout` share of the attacker's data kept out of task 1, playing
    the defender's unseen clean data), at the lower learning rate `task2_lr`, with the EWC
    penalty `ewc_weight`·Σ F·(θ − θ*)² (F: task 1's diagonal Fisher on task 1's data, θ*: task
    1's weights), so that what a fine-tuning defender would do has been done already without
    forgetting the backdoor. The published model answers to the patch; a defender's fine-tuning
    starts inside a flat backdoor region near a clean-data minimum and hardly leaves it. The
    defaults are the paper's (EWC with λ = 1, SAM's ρ = 0.05, task 2 at a tenth of the learning
    rate on a 10% clean share) and its reference scripts' split of the work: 150 epochs of task 1
    on 85% of CIFAR-10 and 100 of task 2 on 10% are 96% and 4% of the optimiser steps.
    Deviations: the recipe's optimiser (Adam by default, SAM around it) instead of SGD, without
    the cosine schedule, weight decay or data augmentation; the training budget is counted in
    optimiser steps (the recipe's epochs over task 1's data) and `task1_share` of them go to task
    1, the rest to task 2 as epochs over its smaller clean set; the poisoned copies are made once
    (the reference code stamps batches on the fly) and only from non-target samples (as
    `badnets`); the Fisher is estimated on 1024 random task-1 samples (the reference: all);
    `task2_sharpness_radius` (default 0: the reference code runs task 2 without SAM) optionally
    makes task 2 sharpness-aware too.
    """

    name = "sbl"
    version = "1"
    paper = "Pham, Ta, Tran, Doan. Flatness-aware Sequential Learning Generates Resilient Backdoors (ECCV 2024)"
    deviations = (
        "recipe optimiser (Adam) with SAM, no cosine schedule, weight decay or augmentation; budget counted in optimiser steps, shared by task1_share; "
        "poisoned copies made once, only from non-target samples; Fisher from 1024 task-1 samples; optional task-2 SAM (off, as the reference code)"
    )
    space = (
        PATCH_SPACE
        | TRAINING_SPACE
        | Space(
            task1_share=Float(0.95, 0.0, 1.0, low_open=True, help="share of the training budget (optimiser steps) for task 1 (poisoned); the rest is task 2 (clean, under EWC)", search=(0.5, 0.99)),
            clean_holdout=Float(0.1, 0.0, 1.0, low_open=True, help="share of the attacker's data kept out of task 1 and used as task 2's clean data", search=(0.05, 0.3)),
            sharpness_radius=Float(0.05, 0.0, 10.0, help="SAM radius rho of task 1 (0: plain training)", search=(0.01, 0.5)),
            task2_sharpness_radius=Float(0.0, 0.0, 10.0, help="SAM radius rho of task 2 (0: plain training, as the reference code)", search=(0.0, 0.5)),
            ewc_weight=Float(1.0, 0.0, 1e9, help="weight lambda of the EWC penalty in task 2 (0: plain clean fine-tuning)", search=(0.0, 100.0)),
            task2_lr=Float(1e-4, 1e-7, 10.0, log=True, help="learning rate of task 2 (the paper: a tenth of task 1's)", search=(1e-5, 1e-3)),
        )
    )

    def check_task(self, task: TaskSpec) -> None:
        for share in ("task1_share", "clean_holdout"):
            if not 0.0 < self.params[share] < 1.0:
                raise ParamError(
                    f"Hyperparameter {share!r} got {self.params[share]!r}; SBL needs both tasks, so it must lie strictly between 0 and 1 "
                    "(task1_share splits the budget between poisoned and clean training, clean_holdout splits the attacker's data between them)."
                )
        patch_trigger(self.params, task)

    def run(self, ctx: AttackContext) -> AttackOutput:
        p = self.params
        trigger = patch_trigger(p, ctx.task)
        order = torch.randperm(len(ctx.data), generator=ctx.generator).to(ctx.device)
        n_clean = min(len(ctx.data) - 1, max(1, round(p["clean_holdout"] * len(ctx.data))))
        clean, kept = ctx.data.subset(order[:n_clean]), ctx.data.subset(order[n_clean:])
        poisoned = poison(kept, trigger, p["poison_rate"], ctx.generator, ctx.task.num_classes)

        # The budget in optimiser steps: the recipe's epochs over task 1's data. Task 2 gets what
        # task 1 leaves, as epochs over its small clean set, and at least one (task 1 never sees
        # the held-out share, so the samples seen stay within the recipe's epochs over all the data).
        epochs, task1_batches = recipe_epochs(p, ctx.task), math.ceil(len(poisoned) / p["batch_size"])
        task1_epochs = max(1, round(p["task1_share"] * epochs))
        task2_epochs = max(1, round((epochs - task1_epochs) * task1_batches / math.ceil(len(clean) / p["batch_size"])))

        model = train_from_scratch(ctx, poisoned, p, epochs=task1_epochs, stage="task 1: poisoned", sharpness_radius=p["sharpness_radius"])

        anchor = [w.detach().clone() for w in model.parameters() if w.requires_grad]
        # a random share of task 1's data: the per-sample gradients cost a backward pass each
        probe = torch.randperm(len(poisoned), generator=ctx.generator)[:FISHER_SAMPLES].to(ctx.device)
        fisher = fisher_diagonal(model, poisoned.subset(probe))
        fit(
            model,
            clean,
            epochs=task2_epochs,
            lr=p["task2_lr"],
            batch_size=p["batch_size"],
            optimizer=p["optimizer"],
            generator=ctx.generator,
            loss_fn=ewc_loss(anchor, fisher, p["ewc_weight"]),
            sharpness_radius=p["task2_sharpness_radius"],
            stage="task 2: clean under EWC",
            progress=ctx.progress,
        )
        return AttackOutput(model, [trigger])
