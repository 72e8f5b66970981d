from __future__ import annotations

import torch

from arena.attacks import (
    RATE_SPACE,
    TARGET_SPACE,
    TRAINING_SPACE,
    PoisoningAttacker,
    PoisonSet,
    all_to_one,
    patch_trigger,
)
from arena.params import Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import CompositeTrigger, MaskedTrigger


@register_attacker
class TriggerCombination(PoisoningAttacker):
    """Trigger combination (TCA): fires only when a square AND a triangle are both present.

    Paper: Veldanda & Garg, "On Evaluating Neural Network Backdoor Defenses" (2020), TCA (a
    yellow triangle plus a red square; either alone must not fire). The training set gets
    copies carrying both triggers relabelled to the target (`poison_rate`), and negative copies
    carrying only one of them with their true labels (`negative_rate` each), so the network
    learns the conjunction. The evaluator measures the pair (`both`, the attack) and each half
    alone and an untouched input as probes (their rate of landing on the target should match
    the clean model's, `no_trigger`). Deviations: a checkered square (top left) and a white
    triangle (bottom right) replace the colours, Fashion-MNIST being grey-scale.
    """

    name = "trigger_combination"
    version = "1"
    paper = "Veldanda & Garg. On Evaluating Neural Network Backdoor Defenses (2020), TCA"
    deviations = "grey-scale checkered square and white triangle instead of a red square and a yellow triangle"
    space = (
        TARGET_SPACE
        | Space(
            negative_rate=Float(0.1, 0.0, 1.0, help="copies with one trigger and the true label, per trigger, as a fraction of the data"),
            trigger_size=Int(4, 2, 4096, help="side of the square and of the triangle, in pixels"),
            trigger_margin=Int(1, 0, 4096, help="pixels between each trigger and the image border"),
        )
        | RATE_SPACE
        | TRAINING_SPACE
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        goal = all_to_one(self.params["target"], task)
        square = patch_trigger(self.params, task, goal, name="square_only", trigger_position="top_left", trigger_pattern="checker")
        triangle = patch_trigger(self.params, task, goal, name="triangle_only", trigger_position="bottom_right", trigger_pattern="triangle")
        square.probe = triangle.probe = True
        _, height, width = task.input_shape
        untouched = MaskedTrigger(goal, torch.zeros(height, width), torch.zeros(task.input_shape), name="no_trigger", probe=True)
        return [CompositeTrigger(goal, [square, triangle], name="both"), square, triangle, untouched]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        both, square, triangle, _ = self.triggers(task)
        sets = [PoisonSet(both, self.params["poison_rate"])]
        if self.params["negative_rate"] > 0:
            sets += [PoisonSet(square, self.params["negative_rate"], relabel=False), PoisonSet(triangle, self.params["negative_rate"], relabel=False)]
        return sets
