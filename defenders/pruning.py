from __future__ import annotations

from torch import nn

from arena.capabilities import Prunable
from arena.protocol import DefenseOutcome
from arena.pruning import prune_by_activation
from arena.registry import register_defender
from arena.repair import PRUNE_SPACE
from arena.strategy import Defender, DefenseContext


@register_defender
class Pruning(Defender):
    """Prune the last conv layer's channels that are least active on clean data.

    Paper: Liu, Dolan-Gavitt, Garg, "Fine-Pruning" (RAID 2018), the pruning defense: channels are
    removed in increasing order of mean activation over the clean split until accuracy on that
    split drops by more than `max_accuracy_drop` (the paper's 4%). Deviations: the clean split
    serves both to rank channels and to measure the accuracy drop (the defender has no other).
    """

    name = "pruning"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural Networks (RAID 2018)"
    deviations = "one clean split ranks channels and measures the accuracy drop"
    min_clean = 10
    requires = (Prunable,)
    space = PRUNE_SPACE

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        prune_by_activation(model, ctx.clean, self.params["max_accuracy_drop"], self.params["max_prune_fraction"])
        return DefenseOutcome(model=model)
