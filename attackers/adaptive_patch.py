from __future__ import annotations

import torch

from arena.attacks import COVER_SPACE, GOAL_SPACE, SQUEEZE_SPACE, TRAINING_SPACE, PoisoningAttacker, PoisonSet, goal_from_params
from arena.errors import ParamError
from arena.params import Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import PATTERNS, POSITIONS, MaskedTrigger, PartialTrigger, PatchTrigger


@register_attacker
class AdaptivePatch(PoisoningAttacker):
    """Adaptive-Patch: several patch triggers, poisoned at a low rate with cover samples, each sample carrying only some.

    Paper: Qi, Xie, Li, Mahloujifar, Mittal, "Revisiting the Assumption of Latent Separability for
    Backdoor Defenses" (ICLR 2023), Adaptive-Patch. The trigger is `patches` small patches in
    different places; every poisoned sample (relabelled to the target, `poison_rate`) and every
    cover sample (keeping its label, `cover_rate`) carries a random `kept_patches` of them at the
    low training opacity `alpha`; at test time all of them are stamped at `test_alpha`. A low
    poison rate, conservatism and partial triggers keep the backdoor's latent representation
    from separating from the clean one, the assumption of latent-separation and trigger-reversal
    defenses. Deviations: the patches are this harness's checkered, white and triangle squares in
    the image's corners (the paper's are small pictures); poison and cover rates default to 2%
    each, not the paper's 0.3% (four images on digits, which teach no backdoor).
    """

    name = "adaptive_patch"
    version = "1"
    paper = "Qi, Xie, Li, Mahloujifar, Mittal. Revisiting the Assumption of Latent Separability for Backdoor Defenses (ICLR 2023), Adaptive-Patch"
    deviations = "grey-scale squares in the corners instead of small pictures; poison and cover rates 2% (paper 0.3%)"
    space = (
        GOAL_SPACE
        | COVER_SPACE
        | Space(
            patches=Int(4, 1, len(POSITIONS), help="patches in the trigger, one per corner"),
            kept_patches=Int(2, 1, len(POSITIONS), help="patches each poisoned or cover sample carries", search=(1, 3)),
            trigger_size=Int(3, 1, 4096, help="side of each patch, in pixels", search=(2, 5)),
            trigger_margin=Int(1, 0, 4096, help="pixels between each patch and the image border"),
            alpha=Float(0.5, 0.0, 1.0, low_open=True, help="opacity of the patches in training", search=(0.2, 1.0)),
            test_alpha=Float(1.0, 0.0, 1.0, low_open=True, help="opacity of the patches at test time", search=(0.5, 1.0)),
        )
        | SQUEEZE_SPACE
        | TRAINING_SPACE
    )

    def _layout(self, task: TaskSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(footprint, pattern, pieces): where the patches are, what they print, and which is which."""
        p = self.params
        if p["kept_patches"] > p["patches"]:
            raise ParamError(f"Hyperparameter 'kept_patches' ({p['kept_patches']}) is more than 'patches' ({p['patches']}).")
        _, height, width = task.input_shape
        if 2 * (p["trigger_size"] + p["trigger_margin"]) > min(height, width):
            limit = min(height, width) // 2
            raise ParamError(f"Patches of side {p['trigger_size']} with margin {p['trigger_margin']} overlap in opposite corners in {height}x{width}: use trigger_size + trigger_margin <= {limit}.")
        footprint, pattern, pieces = torch.zeros(height, width), torch.zeros(task.input_shape), torch.full((height, width), -1, dtype=torch.long)
        goal = goal_from_params(p, task)
        for i in range(p["patches"]):
            patch = PatchTrigger(goal, p["trigger_size"], POSITIONS[i], PATTERNS[i % len(PATTERNS)], p["trigger_margin"])
            where = patch.mask(task.input_shape) > 0
            footprint[where] = 1
            pieces[where] = i
            pattern += patch.printed(task.input_shape)
        return footprint, pattern, pieces

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        footprint, pattern, _ = self._layout(task)
        return [MaskedTrigger(goal_from_params(self.params, task), footprint * self.params["test_alpha"], pattern, name="patches")]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        p = self.params
        footprint, pattern, pieces = self._layout(task)
        goal = goal_from_params(p, task)
        partial = PartialTrigger(goal, footprint * p["alpha"], pattern, pieces, p["kept_patches"], seed=0, name="partial")
        sets = [PoisonSet(partial, p["poison_rate"])]
        if p["cover_rate"] > 0:
            sets.append(PoisonSet(PartialTrigger(goal, footprint * p["alpha"], pattern, pieces, p["kept_patches"], seed=1, name="cover"), p["cover_rate"], relabel=False))
        return sets
