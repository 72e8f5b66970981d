from __future__ import annotations

from torch import nn

from arena.protocol import DefenseOutcome
from arena.registry import register_defender
from arena.repair import FINE_TUNE_SPACE, fine_tune
from arena.strategy import Defender, DefenseContext


@register_defender
class FineTuning(Defender):
    """Fine-tune the whole model on the defender's clean split.

    Paper: the fine-tuning defense of Chen et al. (2017) as evaluated in Liu, Dolan-Gavitt, Garg,
    "Fine-Pruning" (RAID 2018): continue training from the given weights on held-out clean data.
    The attack built against its assumption, that clean training makes a model forget its
    backdoor, is `sbl` (Pham et al., ECCV 2024): a backdoor trained into a flat region and then
    fine-tuned on clean data by the attacker itself, under EWC.
    Deviations: Adam instead of SGD; the budget is counted in optimiser steps so it means the
    same on small and large clean splits.
    """

    name = "fine_tuning"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning (RAID 2018), fine-tuning baseline"
    deviations = "Adam optimiser; budget in steps"
    min_clean = 10
    space = FINE_TUNE_SPACE

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        return DefenseOutcome(model=fine_tune(model, ctx.clean, self.params, ctx.generator, ctx.progress))
