from __future__ import annotations

from arena.attacks import GEOMETRY_SPACE, RATE_SPACE, TRAINING_SPACE, PoisoningAttacker, patch_trigger
from arena.errors import ParamError
from arena.params import Int, Space, Text
from arena.protocol import LabelMap, TaskSpec, Trigger
from arena.registry import register_attacker


@register_attacker
class AllToAll(PoisoningAttacker):
    """All-to-all (AAA): one patch trigger sends every label y to its own goal, (y + shift) mod C.

    Paper: Gu, Dolan-Gavitt, Garg, "BadNets" (2017), MNIST all-to-all attack (digit i is sent to
    i + 1); evaluated as AAA in Veldanda & Garg, "On Evaluating Neural Network Backdoor
    Defenses" (2020). Triggered, relabelled copies of a `poison_rate` fraction of the training
    data are added and the network is trained as normal. `label_map` (e.g. "1,2,...,9,0")
    replaces the shift with any map from labels to labels. Its ASR is capped by clean accuracy:
    to send y to y + 1 the network must first recognise y (on Fashion-MNIST, per-class ASR
    tracks per-class accuracy, shirts lowest, and ASR ≈ CA ≈ 0.90 at poison rates 0.2 and 0.3
    alike: rows "all_to_all" and "all_to_all (poison 0.2)" of
    benchmarks/results/attacks-fashion_mnist.jsonl, from `python benchmarks/attacks.py --dataset
    fashion_mnist --seeds 0 1 2`). Deviations: none in the algorithm; the default poison rate
    is 0.3 (BadNets' all-to-one default here is 0.1) because every class must learn its own
    redirection.
    """

    name = "all_to_all"
    version = "1"
    paper = "Gu, Dolan-Gavitt, Garg. BadNets (2017), all-to-all attack; Veldanda & Garg (2020), AAA"
    deviations = "default poison rate 0.3"
    space = (
        Space(
            shift=Int(1, 1, 10_000, help="label y is sent to (y + shift) mod C"),
            label_map=Text("", help='explicit goal label per label, comma-separated ("1,2,0"); overrides shift'),
        )
        | RATE_SPACE
        | GEOMETRY_SPACE
        | TRAINING_SPACE
    ).with_defaults(poison_rate=0.3)

    def goal(self, task: TaskSpec) -> LabelMap:
        text = self.params["label_map"]
        if text:
            try:
                mapping = tuple(int(v) for v in text.split(","))
            except ValueError:
                raise ParamError(f"label_map {text!r} must be comma-separated integer labels, one per label 0..{task.num_classes - 1}.") from None
        else:
            if self.params["shift"] % task.num_classes == 0:
                raise ParamError(f"shift {self.params['shift']} is a multiple of the {task.num_classes} labels: it sends every label to itself.")
            mapping = tuple((y + self.params["shift"]) % task.num_classes for y in range(task.num_classes))
        goal = LabelMap(mapping)
        goal.check(task.num_classes)
        return goal

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        return [patch_trigger(self.params, task, self.goal(task))]
