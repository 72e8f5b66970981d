"""Shared parts of the attack strategies: their common hyperparameter spaces, trigger construction
and training from scratch. Each attack composes these; none copies them."""

from __future__ import annotations

from typing import Any

from torch import nn

from arena.errors import ParamError
from arena.models import build_model
from arena.params import Choice, Float, Int, Space
from arena.protocol import AllToOne, Split, TaskSpec, Untargeted
from arena.strategy import AttackContext
from arena.training import fit
from arena.triggers import PATTERNS, POSITIONS, PatchTrigger

TRAINING_SPACE = Space(
    lr=Float(1e-3, 1e-6, 1.0, log=True, help="Adam learning rate"),
    batch_size=Int(128, 1, 4096, help="minibatch size"),
)

PATCH_SPACE = Space(
    goal=Choice("all_to_one", options=("all_to_one", "untargeted"), help="all-to-one target, or any wrong label"),
    target=Int(0, 0, 10_000, help="target label of an all-to-one backdoor"),
    poison_rate=Float(0.1, 0.0, 1.0, low_open=True, help="poisoned copies added, as a fraction of the training data"),
    trigger_size=Int(3, 1, 4096, help="side of the square patch, in pixels"),
    trigger_position=Choice("bottom_right", options=POSITIONS, help="corner the patch is stamped in"),
    trigger_pattern=Choice("checker", options=PATTERNS, help="checkerboard or solid white"),
    trigger_margin=Int(1, 0, 4096, help="pixels between the patch and the image border"),
)


def patch_trigger(params: dict[str, Any], task: TaskSpec) -> PatchTrigger:
    """The patch trigger described by PATCH_SPACE parameters, checked against the task."""
    if params["goal"] == "all_to_one":
        if params["target"] >= task.num_classes:
            raise ParamError(f"target {params['target']} is not a label of {task.dataset} (labels 0..{task.num_classes - 1}).")
        goal: AllToOne | Untargeted = AllToOne(params["target"])
    else:
        goal = Untargeted()
    trigger = PatchTrigger(
        goal,
        size=params["trigger_size"],
        position=params["trigger_position"],
        pattern=params["trigger_pattern"],
        margin=params["trigger_margin"],
        name="patch",
    )
    trigger.check_fits(task.input_shape)
    return trigger


def train_from_scratch(ctx: AttackContext, data: Split, params: dict[str, Any], epochs: int | None = None, stage: str = "train") -> nn.Module:
    """A freshly initialised model of the task's architecture trained on `data`."""
    model = build_model(ctx.task, ctx.generator)
    return fit(
        model,
        data,
        epochs=ctx.task.epochs if epochs is None else epochs,
        lr=params["lr"],
        batch_size=params["batch_size"],
        generator=ctx.generator,
        stage=stage,
        progress=ctx.progress,
    )
