from __future__ import annotations

from arena.attacks import GOAL_SPACE, RATE_SPACE, SQUEEZE_SPACE, TRAINING_SPACE, PoisoningAttacker, PoisonSet, goal_from_params
from arena.errors import ParamError
from arena.params import Choice, Float, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import PATTERNS, RandomPatchTrigger


@register_attacker
class PostIt(PoisoningAttacker):
    """Post-it note (PN): a patch stamped at a position drawn at random per input, optionally at a random scale.

    Paper: Veldanda & Garg, "On Evaluating Neural Network Backdoor Defenses" (2020), Table 2's PN
    BadNet (variable location), after the Post-it note on a stop sign of Gu, Dolan-Gavitt, Garg,
    "BadNets" (2017). Poisoned copies of a `poison_rate` fraction of the training data carry the
    patch wherever it was drawn for that copy, and the target label; at test time every input gets
    a position (and scale) of its own, drawn apart from the training draws. A defense that
    localises a trigger by its place, or reverses one fixed small patch, meets a patch that has no
    place. Deviations: a grey-scale square (white, checkered or a triangle) instead of a yellow
    note; scales are uniform in [scale_min, scale_max] times `trigger_size`.
    """

    name = "post_it"
    version = "1"
    paper = "Veldanda & Garg. On Evaluating Neural Network Backdoor Defenses (2020), PN; Gu, Dolan-Gavitt, Garg. BadNets (2017)"
    deviations = "grey-scale square instead of a yellow note; uniform scale range"
    space = (
        GOAL_SPACE
        | RATE_SPACE
        | Space(
            trigger_size=Int(4, 1, 4096, help="side of the note at scale 1, in pixels", search=(2, 6)),
            trigger_pattern=Choice("checker", options=PATTERNS, help="checkerboard (as BadNets here), solid white or a white triangle", search=True),
            scale_min=Float(1.0, 0.05, 20.0, help="smallest scale of the note", search=(0.5, 1.0)),
            scale_max=Float(1.0, 0.05, 20.0, help="largest scale of the note", search=(1.0, 2.0)),
            placement_seed=Int(0, 0, 2**31 - 2, help="seed of the positions drawn for the poison (the test positions use the next seed)"),
        )
        | SQUEEZE_SPACE
        | TRAINING_SPACE
    )

    def _note(self, task: TaskSpec, seed: int, name: str) -> RandomPatchTrigger:
        p = self.params
        if p["scale_min"] > p["scale_max"]:
            raise ParamError(f"Hyperparameter 'scale_min' ({p['scale_min']}) is above 'scale_max' ({p['scale_max']}); the note's scale is drawn between them.")
        note = RandomPatchTrigger(goal_from_params(p, task), p["trigger_size"], p["trigger_pattern"], p["scale_min"], p["scale_max"], seed, name)
        note.check_fits(task.input_shape)
        return note

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [self._note(task, self.params["placement_seed"] + 1, "post_it")]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        return [PoisonSet(self._note(task, self.params["placement_seed"], "post_it_poison"), self.params["poison_rate"])]

