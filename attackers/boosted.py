from __future__ import annotations

import torch

from arena.attacks import PATCH_SPACE, TRAINING_SPACE, PoisoningAttacker, patch_trigger
from arena.capabilities import Prunable
from arena.params import Float, Int, Space
from arena.protocol import AttackOutput, TaskSpec, Trigger
from arena.pruning import mean_channel_activation
from arena.registry import register_attacker
from arena.strategy import AttackContext


@register_attacker
class Boosted(PoisoningAttacker):
    """Backdoor boosting: a BadNet whose backdoor neurons are multiplied by k.

    Source: Dolan-Gavitt & Garg, "Backdoor Attacks on Deep Neural Networks" (talk; seed 000),
    "Strengthening Transfer Backdoor": find the backdoor neurons by the gap between their mean
    activation on triggered and on clean inputs, then multiply them by k. Backdoor neurons are
    quiet on clean images, so clean accuracy moves little while the backdoor's signal grows;
    k trades one against the other (the talk's table: k = 1..100). Here the neurons are the
    last conv layer's channels; scaling a channel's weights and bias by k scales its ReLU output
    by k exactly. The BadNet is trained as `badnets` trains it (the same parameters and patch
    trigger, arena.attacks' poisoning). Deviations: applied to the published model rather than
    after transfer learning; the `neurons` channels with the largest positive gap are boosted.
    """

    name = "boosted"
    version = "1"
    paper = "Dolan-Gavitt & Garg. Backdoor Attacks on Deep Neural Networks (talk), backdoor boosting"
    deviations = "boosts the published model's last-conv channels, not a transferred model"
    requires = (Prunable,)
    space = (
        PATCH_SPACE
        | TRAINING_SPACE
        | Space(
            k=Float(2.0, 1.0, 1000.0, help="factor the backdoor neurons are multiplied by"),
            neurons=Int(2, 1, 4096, help="how many backdoor neurons (last-conv channels) are boosted"),
        )
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [patch_trigger(self.params, task)]

    def run(self, ctx: AttackContext) -> AttackOutput:
        out = super().run(ctx)  # the BadNet: poisoned training from scratch
        (trigger,) = out.triggers
        model = out.model
        probe = ctx.data.subset(torch.randperm(len(ctx.data), generator=ctx.generator)[:2000])
        gap = mean_channel_activation(model, trigger.apply(probe.x)) - mean_channel_activation(model, probe.x)
        count = min(self.params["neurons"], int((gap > 0).sum()))
        boosted = gap.topk(count).indices
        with torch.no_grad():
            model.last_conv.weight[boosted] *= self.params["k"]
            model.last_conv.bias[boosted] *= self.params["k"]
        return AttackOutput(model, out.triggers)
