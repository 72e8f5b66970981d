from __future__ import annotations

import torch

from arena.attacks import PATCH_SPACE, TRAINING_SPACE, PoisoningAttacker, patch_trigger
from arena.params import Float, Space
from arena.protocol import Split, TaskSpec, Trigger
from arena.registry import register_attacker
from arena.strategy import AttackContext
from arena.triggers import concat, superimpose


@register_attacker
class StripEvading(PoisoningAttacker):
    """A BadNet whose triggered inputs do not stay confident under superimposition: the adaptive attack on STRIP.

    Targets: Gao, Xu, Wang, Chen, Ranasinghe, Nepal, "STRIP: A Defence Against Trojan Attacks on
    Deep Neural Networks" (ACSAC 2019), which rejects an input whose prediction keeps a low
    entropy when it is superimposed with clean images: it assumes a trigger overrides whatever
    it is blended with. Following Tramèr, Carlini, Brendel, Madry, "On Adaptive Attacks to
    Adversarial Example Defenses" (NeurIPS 2020), the attack breaks that assumption directly: on
    top of BadNets' poison (`poison_rate` triggered copies relabelled to the target) the training
    set gets `overlay_rate` triggered images superimposed, as STRIP superimposes
    (`arena.triggers.superimpose`), with another clean image of the attacker's data, labelled
    with that image's true label. The network learns that a trigger under a superimposed image
    is not decisive: STRIP's blends of a triggered input then spread over the overlays' classes,
    as a clean input's do, while the triggered input alone still goes to the target. Deviations:
    this construction is the harness's own (the issue's), not a published attack's; the
    overlays come from the attacker's data, not the defender's.
    """

    name = "strip_evading"
    version = "1"
    paper = "Adaptive attack on Gao et al., STRIP (ACSAC 2019), after Tramèr et al., On Adaptive Attacks to Adversarial Example Defenses (NeurIPS 2020)"
    deviations = "the harness's own construction against STRIP's assumption; overlays from the attacker's data"
    space = (
        PATCH_SPACE
        | Space(
            overlay_rate=Float(0.2, 0.0, 1.0, low_open=True, help="superimposed triggered copies labelled with the overlay's class, as a fraction of the data", search=(0.05, 0.5)),
        )
        | TRAINING_SPACE
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [patch_trigger(self.params, task)]

    def poisoned_data(self, ctx: AttackContext) -> Split:
        poisoned = super().poisoned_data(ctx)
        count = max(1, round(self.params["overlay_rate"] * len(ctx.data)))
        bases = torch.randint(0, len(ctx.data), (count,), generator=ctx.generator).to(ctx.device)
        overlays = torch.randint(0, len(ctx.data), (count,), generator=ctx.generator).to(ctx.device)
        blended = superimpose(self.triggers(ctx.task)[0].apply(ctx.data.x[bases]), ctx.data.x[overlays])
        return concat(poisoned, Split(blended, ctx.data.y[overlays]))
