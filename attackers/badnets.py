from __future__ import annotations

from arena.attacks import PATCH_SPACE, TRAINING_SPACE, patch_trigger, train_from_scratch
from arena.protocol import AttackOutput, TaskSpec
from arena.registry import register_attacker
from arena.strategy import AttackContext, Attacker
from arena.triggers import poison


@register_attacker
class BadNets(Attacker):
    """Training-set poisoning with a patch trigger, all-to-one or untargeted.

    Paper: Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
    Model Supply Chain" (2017). The training set is augmented with triggered copies of a
    `poison_rate` fraction of samples, relabelled to the target (or, untargeted, to a random
    wrong label, as in the traffic-sign attack), and the network is trained as normal.
    Deviations: poisoned copies are drawn only from samples whose label differs from the target
    (a copy that keeps its label teaches nothing).
    """

    name = "badnets"
    version = "1"
    paper = "Gu, Dolan-Gavitt, Garg. BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain (2017)"
    deviations = "poisoned copies are drawn only from non-target samples"
    space = PATCH_SPACE | TRAINING_SPACE

    def check_task(self, task: TaskSpec) -> None:
        patch_trigger(self.params, task)

    def run(self, ctx: AttackContext) -> AttackOutput:
        trigger = patch_trigger(self.params, ctx.task)
        data = poison(ctx.data, trigger, self.params["poison_rate"], ctx.generator, ctx.task.num_classes)
        return AttackOutput(train_from_scratch(ctx, data, self.params), [trigger])
