from __future__ import annotations

from arena.attacks import GEOMETRY_SPACE, RATE_SPACE, TRAINING_SPACE, PoisoningAttacker, all_to_one, patch_trigger
from arena.params import Choice, Int, Space
from arena.protocol import TaskSpec, Trigger
from arena.registry import register_attacker
from arena.triggers import PATTERNS, POSITIONS


@register_attacker
class MultiTrigger(PoisoningAttacker):
    """Several independent patch triggers: any one fires (MTSTA), or each its own label (MTMTA).

    Paper: Veldanda & Garg, "On Evaluating Neural Network Backdoor Defenses" (2020), the
    multi-trigger single-target (MTSTA) and multi-trigger multi-target (MTMTA) attacks. Trigger i
    is a patch in corner i (in the order of `arena.triggers.POSITIONS`) with pattern i (checker,
    white, triangle, cycling), so the triggers differ in place and shape as the paper's lipstick,
    eyebrow and sunglasses do. Each trigger gets its own poison set of `poison_rate`. In
    `single_target` mode every trigger sends to `target`; in `multi_target` mode trigger i sends
    to (target + i) mod C. ASR is reported per trigger; the headline is the best one (the
    defender must stop all of them). Deviations: patch triggers stand in for the paper's
    physical face accessories (Fashion-MNIST has no faces).
    """

    name = "multi_trigger"
    version = "1"
    paper = "Veldanda & Garg. On Evaluating Neural Network Backdoor Defenses (2020), MTSTA/MTMTA"
    deviations = "patch triggers in different corners stand in for the paper's face accessories"
    space = (
        Space(
            mode=Choice("single_target", options=("single_target", "multi_target"), help="MTSTA or MTMTA"),
            target=Int(0, 0, 10_000, help="the target (single_target), or the first target (multi_target)"),
            triggers=Int(3, 2, len(POSITIONS), help="how many triggers"),
        )
        | RATE_SPACE
        | GEOMETRY_SPACE.without("trigger_position", "trigger_pattern")
        | TRAINING_SPACE
    )

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        p = self.params
        out = []
        for i in range(p["triggers"]):
            target = p["target"] if p["mode"] == "single_target" else (p["target"] + i) % task.num_classes
            out.append(patch_trigger(p, task, all_to_one(target, task), name=f"trigger_{i + 1}", trigger_position=POSITIONS[i], trigger_pattern=PATTERNS[i % len(PATTERNS)]))
        return out
