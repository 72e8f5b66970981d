from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from arena.attacks import TARGET_SPACE, TRAINING_SPACE, all_to_one, train_from_scratch
from arena.errors import ParamError
from arena.models import init_weights
from arena.params import Float, Int, Space
from arena.protocol import AttackOutput, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import fit, frozen
from arena.trigger_generators import TriggerGenerator, diversity_loss, dynamic_trigger
from arena.triggers import GeneratedTrigger


@register_attacker
class InputAware(Attacker):
    """Input-aware dynamic backdoor: a generator network makes each input its own trigger.

    Paper: Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack" (NeurIPS 2020). A pattern
    generator G and a mask generator M (conv encoder–decoders with batch norm, outputs in [0, 1];
    M's one-channel mask sharpened towards 0/1) trigger an input as x' = x + M(x)·(G(x) − x).
    Step 1 trains M alone for a `mask_fraction` share of the budget with the diversity loss
    ‖x1 − x2‖ / ‖M(x1) − M(x2)‖ (pairs: each input and its neighbour in the shuffled batch) plus
    `lambda_norm` times the excess of each mask's mean over `mask_density`. Step 2 trains the
    classifier and G together (M frozen) for the recipe's epochs: in each batch a `poison_rate`
    share gets its own trigger and the target label, the next `cross_rate` share gets the trigger
    generated from another input of the batch (its neighbour) and keeps its true label — the
    cross-trigger term that makes a trigger work only on the input it was made for — and the rest
    stay clean; G also carries the diversity loss (weight `lambda_div`) so different inputs get
    different patterns. The published trigger holds G and M (arena.triggers.GeneratedTrigger).

    Deviations: one optimiser (the recipe's, Adam at 1e-3 by default) for the classifier and G,
    where the paper has SGD for the classifier and Adam (lr 0.01, betas 0.5/0.9) for G, each with
    a step schedule; M by Adam at `mask_lr` 1e-3 with default betas and no schedule (the paper's
    0.01 let M's masks saturate to all-on or all-off on digits for some seeds); the norm penalty
    on each mask's mean (the paper's code penalises each pixel's excess, which on an 8x8 image
    weighs a mask pixel twelve times more than on MNIST); smaller generators (one conv per stage
    and no middle block, width `generator_width`, no dropout); far fewer epochs (digits: 25 for M
    as in the paper, 50 for the classifier); inputs and patterns in [0, 1], not normalised;
    cross pairs from the same shuffled batch rather than a second data loader; all-to-one only;
    no data augmentation.
    """

    name = "input_aware"
    version = "1"
    paper = "Nguyen & Tran. Input-Aware Dynamic Backdoor Attack (NeurIPS 2020)"
    deviations = (
        "one optimiser for classifier and pattern generator (paper: SGD and Adam with schedules); mask generator by Adam at 1e-3, no schedule (paper 0.01); "
        "norm penalty on each mask's mean (paper's code: per pixel); smaller generators; fewer epochs; [0, 1] inputs and patterns; "
        "cross pairs from the same batch; all-to-one only; no augmentation"
    )
    space = (
        TARGET_SPACE
        | Space(
            poison_rate=Float(0.1, 0.0, 1.0, low_open=True, help="share of each batch given its own trigger and the target label (the paper's rho_b)", search=(0.05, 0.3)),
            cross_rate=Float(0.1, 0.0, 1.0, help="share of each batch given another input's trigger and its true label (the paper's rho_c)", search=(0.0, 0.3)),
            mask_density=Float(0.032, 0.0, 1.0, low_open=True, help="largest mean mask value before the norm penalty applies (the paper's 0.032)", search=(0.01, 0.2)),
            lambda_norm=Float(100.0, 0.0, 1e6, help="weight of the mask norm penalty in the mask generator's pre-training"),
            lambda_div=Float(1.0, 0.0, 1e6, help="weight of the diversity loss on the pattern generator", search=(0.0, 2.0)),
            mask_fraction=Float(0.5, 0.0, 1.0, low_open=True, help="mask generator pre-training epochs, as a share of the budget"),
            mask_lr=Float(0.001, 1e-6, 10.0, log=True, help="Adam learning rate of the mask generator's pre-training (the paper: 0.01, with betas 0.5, 0.9)"),
            generator_width=Int(16, 1, 256, help="channels of the generators' first conv layer (doubled in the middle)"),
        )
        | TRAINING_SPACE
    )

    def check_task(self, task: TaskSpec) -> None:
        all_to_one(self.params["target"], task)
        poison, cross = self.params["poison_rate"], self.params["cross_rate"]
        if poison + cross > 1:
            raise ParamError(
                f"poison_rate {poison} plus cross_rate {cross} is {poison + cross:g}: they are shares of the same batch "
                "(own trigger with the target label, another input's trigger with the true label), so together they must not exceed 1."
            )

    def run(self, ctx: AttackContext) -> AttackOutput:
        p = self.params
        goal = all_to_one(p["target"], ctx.task)
        channels = ctx.task.input_shape[0]
        pattern, mask = (self._generator(ctx, channels, out, sharpen) for out, sharpen in ((channels, False), (1, True)))

        # step 1: the mask generator alone
        fit(
            mask,
            ctx.data,
            epochs=max(1, round(p["mask_fraction"] * ctx.task.epochs)),
            lr=p["mask_lr"],
            batch_size=p["batch_size"],
            optimizer="adam",
            generator=ctx.generator,
            stage="train mask generator",
            progress=ctx.progress,
            loss_fn=self._mask_loss,
        )

        # step 2: the classifier and the pattern generator together, the mask generator frozen
        with frozen(mask):
            model = train_from_scratch(
                ctx,
                ctx.data,
                p,
                stage="train classifier and pattern generator",
                loss_fn=self._backdoor_loss(pattern, mask, p["target"]),
                extra_params=list(pattern.parameters()),
            )
        pattern.eval()
        return AttackOutput(model, [GeneratedTrigger(goal, pattern, mask, name="input_aware")])

    def _generator(self, ctx: AttackContext, channels: int, out_channels: int, sharpen: bool) -> TriggerGenerator:
        """A fresh generator, initialised from the host generator and moved to the job's device."""
        generator = TriggerGenerator(channels, out_channels, self.params["generator_width"], sharpen)
        init_weights(generator, ctx.generator)
        return generator.to(ctx.device)

    def _mask_loss(self, mask: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Diversity between each input's mask and its batch neighbour's, plus the norm penalty."""
        m = mask(x)
        norm = F.relu(m.flatten(1).mean(1) - self.params["mask_density"]).mean()
        return self.params["lambda_norm"] * norm + diversity_loss(x, x.roll(1, 0), m, m.roll(1, 0))

    def _backdoor_loss(self, pattern: nn.Module, mask: nn.Module, target: int) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
        poison_rate, cross_rate, lambda_div = self.params["poison_rate"], self.params["cross_rate"], self.params["lambda_div"]

        def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # fit shuffles every epoch, so the leading rows of a batch are a random share of it
            n_bad, n_cross = int(poison_rate * len(x)), int(cross_rate * len(x))
            bad, cross = x[:n_bad], x[n_bad : n_bad + n_cross]
            bad_patterns = pattern(bad)
            triggered = bad + mask(bad) * (bad_patterns - bad)
            # each cross input gets the trigger of the input before it in the batch
            crossed = dynamic_trigger(cross, pattern, mask, source=x.roll(1, 0)[n_bad : n_bad + n_cross])
            inputs = torch.cat([triggered, crossed, x[n_bad + n_cross :]])
            labels = torch.cat([torch.full_like(y[:n_bad], target), y[n_bad:]])
            total = F.cross_entropy(model(inputs), labels)
            if n_bad >= 2 and lambda_div > 0:
                total = total + lambda_div * diversity_loss(bad, bad.roll(1, 0), bad_patterns, bad_patterns.roll(1, 0))
            return total

        return loss
