from __future__ import annotations

import torch

from arena.attacks import PATCH_SPACE, TRAINING_SPACE, patch_trigger, recipe_epochs, train_from_scratch
from arena.capabilities import Prunable
from arena.params import Float, Space
from arena.protocol import AttackOutput, TaskSpec
from arena.pruning import max_preactivation, prune_by_activation, set_pruned
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.training import fit
from arena.triggers import poison


@register_attacker
class PruningAware(Attacker):
    """Fine-Pruning's pruning-aware attack: prune, poison the pruned net, de-prune with lowered biases.

    Paper: Liu, Dolan-Gavitt, Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
    Neural Networks" (RAID 2018), §pruning-aware attack. Steps: (1) train a clean network;
    (2) prune the last conv layer's channels that are dormant on clean data, in increasing order
    of mean activation, until accuracy drops by `prune_accuracy_drop`; (3) train the pruned
    network on poisoned data, so the backdoor lives in the channels a defender keeps; (4) restore
    the pruned channels with their biases lowered so they stay inactive on all the attacker's
    data and clean accuracy is unchanged: a defender that prunes removes exactly these decoys.
    Deviations: the attacker measures accuracy for step (2) on its own training data (it holds
    no other); step (3) runs `retrain_fraction` of the training budget.
    """

    name = "pruning_aware"
    version = "1"
    paper = "Liu, Dolan-Gavitt, Garg. Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural Networks (RAID 2018)"
    deviations = "pruning accuracy measured on the attacker's own data; poisoned retraining for a fraction of the budget"
    requires = (Prunable,)
    space = (
        PATCH_SPACE
        | TRAINING_SPACE
        | Space(
            prune_accuracy_drop=Float(0.04, 0.0, 1.0, help="the attacker prunes until its accuracy falls this much", search=(0.01, 0.1)),
            max_prune_fraction=Float(0.9, 0.0, 1.0, low_open=True, help="at most this share of channels is pruned"),
            retrain_fraction=Float(0.5, 0.0, 1.0, low_open=True, help="poisoned retraining epochs, as a share of the budget", search=(0.1, 0.8)),
            bias_margin=Float(1.0, 0.0, 1e6, help="how far below zero the restored channels' peak pre-activation is set"),
        )
    )

    def check_task(self, task: TaskSpec) -> None:
        patch_trigger(self.params, task)

    def run(self, ctx: AttackContext) -> AttackOutput:
        p = self.params
        trigger = patch_trigger(p, ctx.task)
        model = train_from_scratch(ctx, ctx.data, p, stage="train clean")

        probe_idx = torch.randperm(len(ctx.data), generator=ctx.generator)[:5000]
        probe = ctx.data.subset(probe_idx)
        pruned = prune_by_activation(model, probe, p["prune_accuracy_drop"], p["max_prune_fraction"])

        poisoned = poison(ctx.data, trigger, p["poison_rate"], ctx.generator, ctx.task.num_classes)
        epochs = max(1, round(p["retrain_fraction"] * recipe_epochs(p, ctx.task)))
        fit(model, poisoned, epochs=epochs, lr=p["lr"], batch_size=p["batch_size"], optimizer=p["optimizer"], generator=ctx.generator, stage="poison pruned", progress=ctx.progress)

        if pruned:
            # De-prune: the restored channels must stay silent on everything the attacker saw,
            # clean or triggered, so the published model behaves exactly as the pruned one.
            peak = max_preactivation(model, poisoned.x, pruned)
            with torch.no_grad():
                model.last_conv.bias[pruned] -= peak.clamp(min=0) + p["bias_margin"]
            set_pruned(model, pruned, pruned=False)
        return AttackOutput(model, [trigger])
