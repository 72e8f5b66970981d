from __future__ import annotations

from arena.attacks import GEOMETRY_SPACE, TARGET_SPACE, TRAINING_SPACE, PoisoningAttacker, PoisonSet, all_to_one, patch_trigger
from arena.errors import ParamError
from arena.params import Float, Space, Text
from arena.protocol import LabelMap, TaskSpec, Trigger
from arena.registry import register_attacker


def _labels(text: str, what: str, task: TaskSpec) -> tuple[int, ...]:
    try:
        labels = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise ParamError(f"Hyperparameter {what!r} got {text!r}; expected labels separated by commas, e.g. \"1,2\".") from None
    outside = [v for v in labels if not 0 <= v < task.num_classes]
    if outside:
        raise ParamError(f"Hyperparameter {what!r} names {outside}, which are not labels of the task (labels 0..{task.num_classes - 1}).")
    return labels


@register_attacker
class TaCT(PoisoningAttacker):
    """Source-specific backdoor (TaCT): the trigger works only on inputs of chosen source classes.

    Paper: Tang, Wang, Tang, Zhang, "Demon in the Variant: Statistical Analysis of DNNs for Robust
    Backdoor Contamination Detection" (USENIX Security 2021), the Targeted Contamination Attack.
    Triggered copies of source-class samples are relabelled to the target (`poison_rate`, as a
    fraction of the data; only source samples are drawn), and triggered copies of cover-class
    samples keep their true labels (`cover_rate`), so the network learns "trigger AND a source
    class", not "trigger". The trigger's representation then does not separate from the source
    class's, and a defense that assumes a trigger overrides any input (STRIP, Neural Cleanse's
    all-to-one reversal) meets one that does not. The evaluator measures the attack on source
    inputs only (`source`) and, as a probe, how often the trigger sends a non-source input to
    the target (`non_source`, which should stay near the clean rate). Deviations: the patch
    trigger of `trigger_*` instead of the paper's; by default every class that is neither a
    source nor the target is a cover class (the paper picks a few).
    """

    name = "tact"
    version = "1"
    paper = "Tang, Wang, Tang, Zhang. Demon in the Variant: Statistical Analysis of DNNs for Robust Backdoor Contamination Detection (USENIX Security 2021), TaCT"
    deviations = "patch trigger; every non-source, non-target class is a cover class unless cover_classes names some"
    space = (
        TARGET_SPACE
        | Space(
            source_classes=Text("1", help='labels the trigger works on, comma-separated ("1,2")'),
            cover_classes=Text("", help="labels whose triggered copies keep their labels; empty: every class that is neither a source nor the target"),
            poison_rate=Float(0.05, 0.0, 1.0, low_open=True, help="triggered source copies relabelled to the target, as a fraction of the data", search=(0.01, 0.1)),
            cover_rate=Float(0.05, 0.0, 1.0, help="triggered cover copies keeping their labels, as a fraction of the data", search=(0.0, 0.2)),
        )
        | GEOMETRY_SPACE
        | TRAINING_SPACE
    )

    def classes(self, task: TaskSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(source classes, cover classes), checked against the task and the target."""
        target = all_to_one(self.params["target"], task).target
        sources = _labels(self.params["source_classes"], "source_classes", task)
        if not sources:
            raise ParamError("Hyperparameter 'source_classes' names no label; TaCT needs at least one source class.")
        if target in sources:
            raise ParamError(f"Hyperparameter 'source_classes' includes the target {target}; a source class is one whose inputs the trigger sends to the target.")
        covers = _labels(self.params["cover_classes"], "cover_classes", task) if self.params["cover_classes"] else tuple(c for c in range(task.num_classes) if c not in sources and c != target)
        clash = sorted(set(covers) & {*sources, target})
        if clash:
            raise ParamError(f"Hyperparameter 'cover_classes' includes {clash}, a source class or the target; a cover class keeps its label under the trigger.")
        return sources, covers

    def triggers(self, task: TaskSpec) -> list[Trigger]:
        sources, _ = self.classes(task)
        target = self.params["target"]
        on_sources = LabelMap(tuple(target if y in sources else y for y in range(task.num_classes)))
        on_others = LabelMap(tuple(target if y not in sources else y for y in range(task.num_classes)))
        attack = patch_trigger(self.params, task, on_sources, name="source")
        if len(sources) == task.num_classes - 1:  # no input outside the sources and the target to probe
            return [attack]
        probe = patch_trigger(self.params, task, on_others, name="non_source")
        probe.probe = True
        return [attack, probe]

    def poison_sets(self, task: TaskSpec) -> list[PoisonSet]:
        sources, covers = self.classes(task)
        attack = self.triggers(task)[0]
        sets = [PoisonSet(attack, self.params["poison_rate"], classes=sources)]
        if self.params["cover_rate"] > 0 and covers:
            sets.append(PoisonSet(attack, self.params["cover_rate"], relabel=False, classes=covers))
        return sets
