from __future__ import annotations

import torch

from arena.attacks import GOAL_SPACE, RATE_SPACE, TRAINING_SPACE, PoisoningAttacker, goal_from_params
from arena.params import Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import MaskedTrigger


@register_attacker
class Blended(PoisoningAttacker):
    """Blended injection: a full-image key pattern mixed into the input with weight alpha.

    Paper: Chen, Liu, Li, Lu, Song, "Targeted Backdoor Attacks on Deep Learning Systems Using
    Data Poisoning" (2017), blended injection strategy with a random-noise key pattern:
    x' = (1 − α)·x + α·k, where k is uniform noise drawn once from `pattern_seed`. Poisoned
    copies of a `poison_rate` fraction of the data are relabelled to the target and added.
    Deviations: the same α is used in training and at test time (the paper also tries larger
    test-time α, which only makes the attack easier).
    """

    name = "blended"
    version = "1"
    paper = "Chen, Liu, Li, Lu, Song. Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning (2017)"
    deviations = "same blend weight in training and at test time"
    space = (
        GOAL_SPACE
        | RATE_SPACE
        | Space(
            alpha=Float(0.2, 0.0, 1.0, low_open=True, help="blend weight of the key pattern", search=(0.05, 0.4)),
            pattern_seed=Int(0, 0, 2**31 - 1, help="seed of the uniform-noise key pattern"),
        )
        | TRAINING_SPACE
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        _, height, width = task.input_shape
        key = torch.rand(task.input_shape, generator=torch.Generator().manual_seed(self.params["pattern_seed"]))
        mask = torch.full((height, width), self.params["alpha"])
        return [MaskedTrigger(goal_from_params(self.params, task), mask, key, name="blend")]
