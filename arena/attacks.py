"""Shared parts of the attack strategies: their common hyperparameter spaces, trigger construction,
training from scratch and the training-set poisoning attack family. Each attack composes these;
none copies them."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from torch import nn

from arena.models import PREPROCESSING, build_model, scale_initial_weights, standardize_inputs
from arena.params import Bool, Choice, Float, Int, Space
from arena.protocol import (
    AllToOne,
    AttackOutput,
    Goal,
    Split,
    TaskSpec,
    Trigger,
    Untargeted,
)
from arena.strategy import AttackContext, Attacker
from arena.training import OPTIMIZERS, fit
from arena.triggers import PATTERNS, POSITIONS, PatchTrigger, SqueezedTrigger, concat, poisoned_copies

# The training recipe, as "On Evaluating Neural Network Backdoor Defenses" varies it (its Pitfall 1:
# the same BadNet trained another way defeats a defense tuned on one recipe). The defaults are the
# recipe every board was played with before these knobs existed.
TRAINING_SPACE = Space(
    lr=Float(1e-3, 1e-6, 10.0, log=True, help="learning rate of the optimiser", search=(1e-4, 1e-1)),
    batch_size=Int(128, 1, 4096, help="minibatch size", search=(32, 256)),
    # added after the boards were published: at these defaults a spec and its key are as before
    optimizer=Choice("adam", options=OPTIMIZERS, help="Adam, SGD with momentum 0.9, or Adadelta", search=True, keyed_at_default=False),
    epochs=Int(0, 0, 100_000, help="training epochs; 0: the task's budget (more is refused)", keyed_at_default=False),
    init_scale=Float(1.0, 1e-3, 1e3, log=True, help="factor on the initial weights (PyTorch's default initialisation)", search=(0.5, 2.0), keyed_at_default=False),
    preprocessing=Choice(
        "unit",
        options=PREPROCESSING,
        help="inputs as given in [0, 1], or standardised by the training data's per-channel mean and deviation (a layer of the model)",
        search=True,
        keyed_at_default=False,
    ),
)

TARGET_SPACE = Space(target=Int(0, 0, 10_000, help="target label of the backdoor", search=(0, 9)))

GOAL_SPACE = Space(goal=Choice("all_to_one", options=("all_to_one", "untargeted"), help="all-to-one target, or any wrong label")) | TARGET_SPACE

RATE_SPACE = Space(
    poison_rate=Float(0.1, 0.0, 1.0, low_open=True, help="poisoned copies added, as a fraction of the training data", search=(0.01, 0.3)),
)

GEOMETRY_SPACE = Space(
    trigger_size=Int(3, 1, 4096, help="side of the square patch, in pixels", search=(2, 5)),
    trigger_position=Choice("bottom_right", options=POSITIONS, help="corner the patch is stamped in", search=True),
    trigger_pattern=Choice("checker", options=PATTERNS, help="checkerboard, solid white or a white triangle", search=True),
    trigger_margin=Int(1, 0, 4096, help="pixels between the patch and the image border"),
)

PATCH_SPACE = GOAL_SPACE | RATE_SPACE | GEOMETRY_SPACE

# Qi et al.'s (ICLR 2023) low poison rate with conservatism: triggered "cover" copies that keep their labels.
# 2% each, not the paper's 0.3%: on digits 0.3% is four images, which teach no backdoor.
COVER_SPACE = Space(
    poison_rate=Float(0.02, 0.0, 1.0, low_open=True, help="poisoned copies relabelled to the target, as a fraction of the data", search=(0.003, 0.05)),
    cover_rate=Float(0.02, 0.0, 1.0, help="triggered copies keeping their labels, as a fraction of the data", search=(0.0, 0.05)),
)

# Feature squeezing's squeezers at the strengths its own space searches (defenders/feature_squeezing.py):
# the adaptive attacker does not know which one the defender picks, so it is robust to all of them.
SQUEEZE_BITS = (1, 2, 3, 4, 5)
SQUEEZE_WINDOWS = (2, 3, 5)

SQUEEZE_SPACE = Space(
    squeeze_robust=Bool(
        False,
        help="also teach the trigger after bit-depth reduction and median smoothing, against feature squeezing",
        search=True,
        keyed_at_default=False,
    ),
)


def all_to_one(target: int, task: TaskSpec) -> AllToOne:
    goal = AllToOne(target)
    goal.check(task.num_classes)
    return goal


def goal_from_params(params: dict[str, Any], task: TaskSpec) -> Goal:
    """The goal named by GOAL_SPACE parameters, checked against the task's labels."""
    return all_to_one(params["target"], task) if params["goal"] == "all_to_one" else Untargeted()


def patch_trigger(params: dict[str, Any], task: TaskSpec, goal: Goal | None = None, name: str = "patch", **overrides: Any) -> PatchTrigger:
    """The patch trigger described by GEOMETRY_SPACE parameters (and `overrides` of them),
    with the goal of GOAL_SPACE unless one is given, checked against the task."""
    p = {**params, **overrides}
    trigger = PatchTrigger(
        goal if goal is not None else goal_from_params(params, task),
        size=p["trigger_size"],
        position=p["trigger_position"],
        pattern=p["trigger_pattern"],
        margin=p["trigger_margin"],
        name=name,
    )
    trigger.check_fits(task.input_shape)
    return trigger


def recipe_epochs(params: dict[str, Any], task: TaskSpec) -> int:
    """The training epochs of a TRAINING_SPACE recipe: its own (within the task's budget, as
    `Attacker.check` holds), else the budget."""
    return min(params["epochs"] or task.epochs, task.epochs)


def train_from_scratch(ctx: AttackContext, data: Split, params: dict[str, Any], epochs: int | None = None, stage: str = "train", **fit_options: Any) -> nn.Module:
    """A freshly initialised model of the task's architecture trained on `data` with the
    TRAINING_SPACE recipe in `params` (its epochs unless `epochs` is given); `fit_options` go to
    `fit` (a batch loss of the attack's own, a sharpness radius)."""
    model = build_model(ctx.task, ctx.generator, ctx.device)
    if params["init_scale"] != 1.0:
        scale_initial_weights(model, params["init_scale"])
    if params["preprocessing"] == "standardize":
        standardize_inputs(model, data.x)
    return fit(
        model,
        data,
        epochs=recipe_epochs(params, ctx.task) if epochs is None else epochs,
        lr=params["lr"],
        batch_size=params["batch_size"],
        optimizer=params["optimizer"],
        generator=ctx.generator,
        stage=stage,
        progress=ctx.progress,
        **fit_options,
    )


@dataclass(frozen=True)
class PoisonSet:
    """Triggered copies of a `rate` fraction of the training data, relabelled by the trigger's
    goal (or, a negative example, keeping their true labels)."""

    trigger: Trigger
    rate: float
    relabel: bool = True
    classes: tuple[int, ...] | None = None  # drawn only from samples of these true labels


def squeezed_poison_sets(sets: list[PoisonSet]) -> list[PoisonSet]:
    """The squeeze-robust option's extra poison: for each backdoor-teaching set, copies whose
    triggered image is then bit-depth reduced, and copies median-smoothed (each at a strength
    drawn per sample), with the same goal. A backdoor that fires on its squeezed trigger gives
    the same prediction before and after squeezing, which is what feature squeezing tests."""
    out = []
    for number, s in enumerate(sets):
        if s.relabel:
            for squeeze, levels in (("bit_depth", SQUEEZE_BITS), ("median", SQUEEZE_WINDOWS)):
                squeezed = SqueezedTrigger(s.trigger, squeeze, levels, seed=number, name=f"{s.trigger.name}_{squeeze}")
                out.append(PoisonSet(squeezed, s.rate, classes=s.classes))
    return out


class PoisoningAttacker(Attacker):
    """An attack by training-set poisoning alone: add the poison sets, train from scratch.

    Subclasses say which triggers the evaluator measures and, when it is not "each attack
    trigger at `poison_rate`", which poison sets teach them.
    """

    @abstractmethod
    def triggers(self, task: TaskSpec) -> list[Trigger]:
        """The triggers the published model answers to (probes included), checked against the task."""

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        return [PoisonSet(t, self.params["poison_rate"]) for t in self.triggers(task) if not t.probe]

    def check_task(self, task: TaskSpec) -> None:
        self.poison_sets(task)

    def poisoned_data(self, ctx: AttackContext) -> Split:
        sets = self.poison_sets(ctx.task)
        if self.params.get("squeeze_robust"):
            sets += squeezed_poison_sets(sets)
        copies = [poisoned_copies(ctx.data, s.trigger, s.rate, ctx.generator, ctx.task.num_classes, s.relabel, s.classes) for s in sets]
        return concat(ctx.data, *copies)

    def run(self, ctx: AttackContext) -> AttackOutput:
        model = train_from_scratch(ctx, self.poisoned_data(ctx), self.params)
        return AttackOutput(model, self.triggers(ctx.task))
