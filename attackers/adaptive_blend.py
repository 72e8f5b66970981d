from __future__ import annotations

import torch

from arena.attacks import COVER_SPACE, GOAL_SPACE, TRAINING_SPACE, PoisoningAttacker, PoisonSet, goal_from_params
from arena.errors import ParamError
from arena.params import Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import MaskedTrigger, PartialTrigger


@register_attacker
class AdaptiveBlend(PoisoningAttacker):
    """Adaptive-Blend: a blended trigger cut into pieces, poisoned at a low rate with cover samples and partial triggers.

    Paper: Qi, Xie, Li, Mahloujifar, Mittal, "Revisiting the Assumption of Latent Separability for
    Backdoor Defenses" (ICLR 2023). Defenses that look for poisoned samples or backdoor neurons
    assume that the backdoor's latent representations separate from the clean ones. The attack
    weakens that separation with three moving parts: (1) a low `poison_rate`; (2) conservatism:
    `cover_rate` of the data gets the trigger and KEEPS its label, so the trigger alone is not
    decisive; (3) partial triggers: the blend pattern is cut into `pieces` (a square grid) and
    every poisoned or cover sample carries only `kept_pieces` of them, so no single part of the
    trigger is the backdoor. At test time the whole trigger is blended in at `test_alpha`, a
    little stronger than the training `alpha` (paper: 0.15 and 0.2). Deviations: the key pattern is
    uniform noise drawn from `pattern_seed` (the paper blends a picture); the default poison and
    cover rates are 2% each, not the paper's 0.3%: on digits 0.3% is four images, which teach no
    backdoor, and a default must work on both datasets.
    """

    name = "adaptive_blend"
    version = "1"
    paper = "Qi, Xie, Li, Mahloujifar, Mittal. Revisiting the Assumption of Latent Separability for Backdoor Defenses (ICLR 2023), Adaptive-Blend"
    deviations = "uniform-noise key pattern instead of a picture; poison and cover rates 2% (paper 0.3%)"
    space = (
        GOAL_SPACE
        | COVER_SPACE
        | Space(
            pieces=Int(16, 1, 4096, help="pieces the trigger is cut into (a square number: a k x k grid)"),
            kept_pieces=Int(8, 1, 4096, help="pieces each poisoned or cover sample carries", search=(4, 12)),
            alpha=Float(0.15, 0.0, 1.0, low_open=True, help="blend weight of the trigger in training", search=(0.1, 0.3)),
            test_alpha=Float(0.2, 0.0, 1.0, low_open=True, help="blend weight of the whole trigger at test time", search=(0.15, 0.4)),
            pattern_seed=Int(0, 0, 2**31 - 1, help="seed of the uniform-noise key pattern"),
        )
        | TRAINING_SPACE
    )

    def _grid(self, task: TaskSpec) -> torch.Tensor:
        """(H, W) piece number of each pixel: a k x k grid of near-equal cells."""
        p = self.params
        k = round(p["pieces"] ** 0.5)
        _, height, width = task.input_shape
        if k * k != p["pieces"] or k > min(height, width):
            raise ParamError(f"Hyperparameter 'pieces' got {p['pieces']}; it must be a square number k*k with k at most the image side {min(height, width)} (e.g. 16).")
        if p["kept_pieces"] > p["pieces"]:
            raise ParamError(f"Hyperparameter 'kept_pieces' ({p['kept_pieces']}) is more than 'pieces' ({p['pieces']}).")
        rows = torch.arange(height) * k // height
        cols = torch.arange(width) * k // width
        return rows.view(-1, 1) * k + cols.view(1, -1)

    def _pattern(self, task: TaskSpec) -> torch.Tensor:
        return torch.rand(task.input_shape, generator=torch.Generator().manual_seed(self.params["pattern_seed"]))

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        self._grid(task)
        _, height, width = task.input_shape
        return [MaskedTrigger(goal_from_params(self.params, task), torch.full((height, width), self.params["test_alpha"]), self._pattern(task), name="blend")]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        p = self.params
        _, height, width = task.input_shape
        mask = torch.full((height, width), p["alpha"])
        partial = PartialTrigger(goal_from_params(p, task), mask, self._pattern(task), self._grid(task), p["kept_pieces"], seed=0, name="partial")
        cover = PartialTrigger(partial.goal, mask, self._pattern(task), self._grid(task), p["kept_pieces"], seed=1, name="cover")
        sets = [PoisonSet(partial, p["poison_rate"])]
        if p["cover_rate"] > 0:
            sets.append(PoisonSet(cover, p["cover_rate"], relabel=False))
        return sets
