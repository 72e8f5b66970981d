"""The trusted evaluator (docs/design.md §1, §3): the one piece a reviewer must audit.

It alone sees the triggers and the test split. Given the system a user deploys (a model, and
an input filter or not), it measures clean accuracy and attack success with `arena.metrics`;
`deployed_system` applies the verdict rule to a defense's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from arena import metrics
from arena.protocol import DefenseOutcome, InputFilter, Split, Trigger
from arena.training import predict


@dataclass(frozen=True)
class Evaluation:
    """The evaluator's view of one deployed system (model plus optional filter) on the test split."""

    ca: float
    asr: float
    asr_per_trigger: dict[str, float]
    frr: float | None = None  # filter's false rejection rate on clean test inputs
    far_per_trigger: dict[str, float] | None = None  # filter's false acceptance on triggered inputs

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ca": self.ca, "asr": self.asr, "asr_per_trigger": dict(self.asr_per_trigger)}
        if self.frr is not None:
            out["frr"] = self.frr
            out["far_per_trigger"] = dict(self.far_per_trigger or {})
        return out


def evaluate(model: nn.Module, triggers: list[Trigger], test: Split, input_filter: InputFilter | None = None) -> Evaluation:
    accepted = None if input_filter is None else input_filter.accept(model, test.x).bool()
    ca = metrics.clean_accuracy(predict(model, test.x), test.y, accepted)
    per_trigger: dict[str, float] = {}
    far: dict[str, float] = {}
    for trigger in triggers:
        x_bad = trigger.apply(test.x)
        bad_accepted = None if input_filter is None else input_filter.accept(model, x_bad).bool()
        per_trigger[trigger.name] = metrics.attack_success_rate(
            predict(model, x_bad), test.y, trigger.goal, bad_accepted, clean_acc=ca, clean_accepted=accepted
        )
        if bad_accepted is not None:
            eligible = trigger.goal.eligible(test.y) if trigger.goal.kind != "untargeted" else torch.ones_like(test.y, dtype=torch.bool)
            far[trigger.name] = metrics.false_acceptance_rate(bad_accepted[eligible])
    frr = None if accepted is None else metrics.false_rejection_rate(accepted)
    attacks = {name: v for name, v in per_trigger.items() if name not in {t.name for t in triggers if t.probe}}
    return Evaluation(ca, metrics.headline_asr(attacks), per_trigger, frr, far if accepted is not None else None)


def trigger_targets(triggers: list[Trigger], num_classes: int) -> list[int]:
    """The goal labels of a model's attack triggers (probes left out): what a detector that
    names suspected labels should name. Empty for untargeted goals."""
    labels = torch.arange(num_classes)
    out: set[int] = set()
    for t in triggers:
        if not t.probe and t.goal.kind != "untargeted":
            out.update(int(v) for v in t.goal.targets(labels)[t.goal.eligible(labels)])
    return sorted(out)


def deployed_system(outcome: DefenseOutcome, published: nn.Module, fallback: Callable[[], nn.Module]) -> tuple[str, nn.Module, InputFilter | None]:
    """What the user runs after the defense, by the verdict rule (docs/design.md §3): the
    repaired model (behind the defense's filter, if any); else a flagged model that the defense
    neither repaired nor filtered is rejected for the `fallback()` model; else the published
    model (behind the filter, if any). Returns (which, model, filter)."""
    if outcome.model is not None:
        return "repaired", outcome.model, outcome.input_filter
    if outcome.verdict is not None and outcome.verdict.flagged and outcome.input_filter is None:
        return "fallback", fallback(), None
    return "published", published, outcome.input_filter
