from __future__ import annotations

from arena.attacks import PATCH_SPACE, SQUEEZE_SPACE, TRAINING_SPACE, PoisoningAttacker, patch_trigger
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker


@register_attacker
class BadNets(PoisoningAttacker):
    """Training-set poisoning with a patch trigger, all-to-one or untargeted.

    Paper: Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
    Model Supply Chain" (2017). The training set is augmented with triggered copies of a
    `poison_rate` fraction of samples, relabelled to the target (or, `goal: untargeted`, to a
    random wrong label: the traffic-sign "random target" attack), and the network is trained as
    normal. Deviations: poisoned copies are drawn only from samples whose label differs from the
    target (a copy that keeps its label teaches nothing).

    `squeeze_robust: true` is the adaptive attack on feature squeezing (Xu et al., NDSS 2018,
    whose detector assumes an adversarial input's prediction changes when it is squeezed): the
    poison also carries the triggered images bit-depth reduced and median-smoothed at the
    strengths the defense searches, labelled with the target, so squeezing a triggered input
    leaves its label where it was (`arena.attacks.squeezed_poison_sets`).
    """

    name = "badnets"
    version = "1"
    paper = "Gu, Dolan-Gavitt, Garg. BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain (2017)"
    deviations = "poisoned copies are drawn only from non-target samples"
    space = PATCH_SPACE | SQUEEZE_SPACE | TRAINING_SPACE

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [patch_trigger(self.params, task)]
