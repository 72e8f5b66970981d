from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arena.attacks import (
    GEOMETRY_SPACE,
    TARGET_SPACE,
    TRAINING_SPACE,
    all_to_one,
    patch_trigger,
    train_from_scratch,
)
from arena.params import Choice, Float, Int, Space
from arena.protocol import AttackOutput, Split, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import frozen


def pgd_away(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, steps: int, generator: torch.Generator, batch_size: int = 512) -> torch.Tensor:
    """Untargeted L∞ projected gradient descent (Madry et al. 2018): images within `epsilon` of x
    that the model misclassifies, i.e. whose natural features no longer point to y."""
    step = 2.5 * epsilon / steps
    out = []
    with frozen(model):
        for start in range(0, len(x), batch_size):
            x0, y0 = x[start : start + batch_size], y[start : start + batch_size]
            adv = (x0 + (torch.rand(x0.shape, generator=generator).to(x0.device) * 2 - 1) * epsilon).clamp(0, 1)  # drawn on the CPU generator
            for _ in range(steps):
                adv.requires_grad_(True)
                loss = F.cross_entropy(model(adv), y0)
                (grad,) = torch.autograd.grad(loss, adv)
                adv = (adv.detach() + step * grad.sign()).clamp(x0 - epsilon, x0 + epsilon).clamp(0, 1)
            out.append(adv.detach())
    return torch.cat(out)


def adversarial_loss(epsilon: float, steps: int, generator: torch.Generator) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Madry et al.'s adversarial training objective for `fit`: the loss on the batch's L∞ PGD
    images of radius `epsilon`, so the model learns robust (human-meaningful) features only."""

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(pgd_away(model, x, y, epsilon, steps, generator)), y)

    return loss


@register_attacker
class CleanLabel(Attacker):
    """Clean-label (label-consistent) poisoning: only target-class images are poisoned, labels untouched.

    Paper: Turner, Tsipras, Madry, "Label-Consistent Backdoor Attacks" (2019); evaluated as CLA
    in Veldanda & Garg (2020). A poisoned image with its correct label teaches nothing if the
    network can classify it from its natural features, so the attacker first makes a
    `poison_rate` fraction of the target class hard: (1) train a surrogate network on its data;
    (2) move each chosen image by untargeted L∞ PGD (radius `epsilon`) until the surrogate
    misclassifies it; (3) stamp the patch trigger on it. The poisoned images replace their
    originals, labels unchanged, and the model is trained from scratch: the trigger is the
    easiest feature left that explains the target label. The surrogate is adversarially
    trained (`surrogate: robust`, Madry et al.'s PGD training at the same radius, with
    `surrogate_pgd_steps` steps), as in the paper: the perturbations of a standard network are
    non-robust features that a network trained on them learns as evidence for the target class
    itself (Ilyas et al. 2019), and then the trigger is not needed. Version 1, with a standard
    surrogate, reached ASR 0.715 ± 0.106 on Fashion-MNIST (3 seeds) and 0.265 on digits. The
    robust surrogate does not close the gap here: Fashion-MNIST seeds 0 and 1 give 0.727 and
    0.616 (version 1: 0.594 and 0.787), digits seeds 0 and 1 give 0.466 and 0.157 (the rows
    "clean_label v2 (robust surrogate)" of benchmarks/results/attacks-fashion_mnist.jsonl and
    benchmarks/results/zoo2-digits.txt), against the paper's near-100% on CIFAR-10.
    Deviations: the surrogate is trained for `surrogate_fraction` of the budget; the trigger is
    the full-intensity patch (the paper's reduced-amplitude, four-corner variant targets data
    augmentation we do not use).
    """

    name = "clean_label"
    version = "2"
    paper = "Turner, Tsipras, Madry. Label-Consistent Backdoor Attacks (2019)"
    deviations = "surrogate trained for a fraction of the budget; full-intensity single patch"
    space = (
        TARGET_SPACE
        | Space(
            poison_rate=Float(0.5, 0.0, 1.0, low_open=True, help="fraction of the target class's images poisoned"),
            epsilon=Float(0.2, 0.0, 1.0, help="L∞ radius of the adversarial perturbation (0: trigger only)"),
            pgd_steps=Int(10, 1, 1000, help="PGD steps"),
            surrogate_fraction=Float(0.5, 0.0, 1.0, low_open=True, help="surrogate training epochs, as a share of the budget"),
            surrogate=Choice("robust", options=("robust", "standard"), help="adversarially trained surrogate (the paper's), or a standard one"),
            surrogate_pgd_steps=Int(5, 1, 1000, help="PGD steps per batch of the robust surrogate's adversarial training"),
        )
        | GEOMETRY_SPACE
        | TRAINING_SPACE
    )

    def check_task(self, task: TaskSpec) -> None:
        patch_trigger(self.params, task, all_to_one(self.params["target"], task))

    def run(self, ctx: AttackContext) -> AttackOutput:
        p = self.params
        trigger = patch_trigger(p, ctx.task, all_to_one(p["target"], ctx.task))
        of_target = torch.nonzero(ctx.data.y == p["target"]).flatten()
        chosen = of_target[torch.randperm(len(of_target), generator=ctx.generator)[: max(1, round(p["poison_rate"] * len(of_target)))]]
        x = ctx.data.x.clone()
        hard = x[chosen]
        if p["epsilon"] > 0:
            epochs = max(1, round(p["surrogate_fraction"] * ctx.task.epochs))
            robust = {"loss_fn": adversarial_loss(p["epsilon"], p["surrogate_pgd_steps"], ctx.generator)} if p["surrogate"] == "robust" else {}
            surrogate = train_from_scratch(ctx, ctx.data, p, epochs=epochs, stage="train surrogate", **robust)
            hard = pgd_away(surrogate, hard, ctx.data.y[chosen], p["epsilon"], p["pgd_steps"], ctx.generator)
        x[chosen] = trigger.apply(hard)
        model = train_from_scratch(ctx, Split(x, ctx.data.y), p, stage="train on clean-label poison")
        return AttackOutput(model, [trigger])
