from __future__ import annotations

import math

import torch

from arena.attacks import GOAL_SPACE, RATE_SPACE, TRAINING_SPACE, PoisoningAttacker, goal_from_params
from arena.params import Choice, Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import MaskedTrigger

SHAPES = ("band", "frame", "motif")


def large_footprint(shape: str, area: float, height: int, width: int) -> torch.Tensor:
    """(H, W) 0/1 footprint of a large trigger covering about `area` of the image: a horizontal
    band across the middle, a frame along the border, or a centred square (the motif's)."""
    m = torch.zeros(height, width)
    if shape == "band":
        rows = max(1, round(area * height))
        top = (height - rows) // 2
        m[top : top + rows] = 1
    elif shape == "frame":
        # the narrowest border whose area reaches `area`: 1 - (H - 2w)(W - 2w) / (HW) >= area
        w = next(w for w in range(1, min(height, width) // 2 + 2) if 1 - max(height - 2 * w, 0) * max(width - 2 * w, 0) / (height * width) >= area - 1e-9)
        m[:w] = m[-w:] = 1
        m[:, :w] = m[:, -w:] = 1
    else:
        side = max(1, round(math.sqrt(area * height * width)))
        side = min(side, height, width)
        top, left = (height - side) // 2, (width - side) // 2
        m[top : top + side, left : left + side] = 1
    return m


@register_attacker
class LargeTrigger(PoisoningAttacker):
    """A large structured trigger (a band, a frame, a printed motif) covering a sizeable share of the image.

    Paper: Veldanda & Garg, "On Evaluating Neural Network Backdoor Defenses" (2020), Table 2's SG
    (sunglasses) and LS (lipstick) BadNets: large, semantically meaningful triggers, which Neural
    Cleanse's assumption of a small trigger misses (its reversed trigger bears no resemblance to
    the original) and which fine-pruning cannot isolate in a few dormant neurons. BadNets-style
    poisoning: triggered copies of a `poison_rate` fraction relabelled to the target. The trigger
    covers `area` of the image with `opacity`: `band` (a horizontal band across the middle, like
    sunglasses), `frame` (the border), or `motif` (a centred square printed with a fixed random
    black-and-white pattern drawn from `pattern_seed`). Deviations: geometric shapes stand in
    for the paper's sunglasses and lipstick (our data are garments and digits); band and frame
    are white; the trigger's place is fixed (the paper's lipstick moves with the face). A frame
    is at least one pixel wide, so on small images it covers more than a small `area` asks
    (on 8x8 digits at least 44%).
    """

    name = "large_trigger"
    version = "1"
    paper = "Veldanda & Garg. On Evaluating Neural Network Backdoor Defenses (2020), SG and LS"
    deviations = "geometric band, frame or printed square instead of sunglasses and lipstick; fixed place"
    space = (
        GOAL_SPACE
        | RATE_SPACE
        | Space(
            shape=Choice("band", options=SHAPES, help="a band across the middle, a frame along the border, or a printed square", search=True),
            area=Float(0.2, 0.0, 1.0, low_open=True, help="share of the image the trigger covers", search=(0.1, 0.4)),
            opacity=Float(1.0, 0.0, 1.0, low_open=True, help="blend weight of the trigger over the image", search=(0.3, 1.0)),
            pattern_seed=Int(0, 0, 2**31 - 1, help="seed of the motif's black-and-white print"),
        )
        | TRAINING_SPACE
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        p = self.params
        _, height, width = task.input_shape
        footprint = large_footprint(p["shape"], p["area"], height, width)
        if p["shape"] == "motif":
            print_ = (torch.rand(height, width, generator=torch.Generator().manual_seed(p["pattern_seed"])) < 0.5).float()
            pattern = print_.expand(task.input_shape).clone()
        else:
            pattern = torch.ones(task.input_shape)
        return [MaskedTrigger(goal_from_params(p, task), footprint * p["opacity"], pattern, name=p["shape"])]
