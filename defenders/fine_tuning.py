from __future__ import annotations

import math
from typing import Any

from torch import nn

from arena.params import Float, Int, Space
from arena.protocol import DefenseOutcome, Split
from arena.registry import register_defender
from arena.strategy import Defender, DefenseContext
from arena.training import fit

FINE_TUNE_SPACE = Space(
    steps=Int(300, 1, 1_000_000, help="optimiser steps of fine-tuning on the clean split"),
    lr=Float(1e-3, 1e-6, 1.0, log=True, help="Adam learning rate"),
    batch_size=Int(32, 1, 4096, help="minibatch size"),
)


def fine_tune(model: nn.Module, clean: Split, params: dict[str, Any], ctx: DefenseContext) -> nn.Module:
    """Continue training on the clean split for about `steps` steps (whole epochs)."""
    per_epoch = math.ceil(len(clean) / params["batch_size"])
    epochs = max(1, round(params["steps"] / per_epoch))
    return fit(model, clean, epochs=epochs, lr=params["lr"], batch_size=params["batch_size"], generator=ctx.generator, stage="fine-tune", progress=ctx.progress)


@register_defender
class FineTuning(Defender):
    """Fine-tune the whole model on the defender's clean split.

    Paper: the fine-tuning defense of Chen et al. (2017) as evaluated in Liu, Dolan-Gavitt, Garg,
    "Fine-Pruning" (RAID 2018): continue training from the given weights on held-out clean data.
    Deviations: Adam instead of SGD; the budget is counted in optimiser steps so it means the
    same on small and large clean splits.
    """

    name = "fine_tuning"
    version = "1"
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning (RAID 2018), fine-tuning baseline"
    deviations = "Adam optimiser; budget in steps"
    min_clean = 10
    space = FINE_TUNE_SPACE

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        return DefenseOutcome(model=fine_tune(model, ctx.clean, self.params, ctx))
