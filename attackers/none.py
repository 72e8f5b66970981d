from __future__ import annotations

from arena.attacks import TRAINING_SPACE, train_from_scratch
from arena.protocol import AttackOutput
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker


@register_attacker
class Honest(Attacker):
    """Honest training: the baseline that makes defense costs and false positives measurable.

    Paper: the honestly trained reference network of BadNets (Gu et al., 2017). Deviations: none.
    """

    name = "none"
    version = "1"
    paper = "Gu, Dolan-Gavitt, Garg. BadNets (2017): the honestly trained baseline network"
    space = TRAINING_SPACE

    def run(self, ctx: AttackContext) -> AttackOutput:
        return AttackOutput(train_from_scratch(ctx, ctx.data, self.params), triggers=[])
