from __future__ import annotations

from torch import nn

from arena.protocol import DefenseOutcome
from arena.registry import register_defender
from arena.strategy import Defender, DefenseContext


@register_defender
class Deploy(Defender):
    """Deploy the model as it is: the baseline every defense's cost is measured against.

    Paper: the undefended user of BadNets (Gu et al., 2017). Deviations: none.
    """

    name = "none"
    version = "1"
    paper = "Gu, Dolan-Gavitt, Garg. BadNets (2017): the undefended user"

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        return DefenseOutcome()
