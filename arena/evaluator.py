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
from arena.errors import StrategyError
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


# Two askings of a filter may disagree on this share of inputs before the filter is refused: an
# honest filter's threshold can flip on an input whose score moved in the last bit when the
# batch around it changed size (the kernels block the arithmetic differently).
FILTER_DISAGREEMENT_LIMIT = 0.001


class FilterInconsistent(StrategyError):
    """An input filter whose answers depend on the batch it is asked in, not on the input alone."""


def filter_answers(input_filter: InputFilter, model: nn.Module, versions: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Ask `input_filter` about every input of `versions` (the clean test inputs, then each
    trigger's copies of them: equal lengths) so that it cannot tell clean from triggered by the
    asking (docs/design.md §1, "Input filters are queried fairly"):

    - Round one: as many batches as versions; each batch holds one version of every test image,
      a random one per image, in random order. Every batch mixes clean and triggered inputs, and
      no batch holds two versions of one image (whose difference would show the trigger).
    - Round two: the same inputs reshuffled across batches of another size and mixture.
    - The answers must be a function of the input: where more than FILTER_DISAGREEMENT_LIMIT of
      them differ between the rounds, the filter is refused (FilterInconsistent), and its cell
      fails with that reason. Round one's answers are returned, one boolean tensor per version.

    A sandboxed filter (arena/sandbox.py) answers each batch from a fresh fork of its worker, so
    nothing carries from one batch to the next; the rounds catch what batch context can still do.
    """
    count, n = len(versions), len(versions[0])
    if n == 0:
        return [torch.ones(0, dtype=torch.bool) for _ in versions]
    device = versions[0].device
    stacked = torch.stack(versions)  # (versions, n, C, H, W)
    generator = torch.Generator().manual_seed(seed)

    def ask(version: torch.Tensor, image: torch.Tensor, out: torch.Tensor) -> None:
        answer = torch.as_tensor(input_filter.accept(model, stacked[version.to(device), image.to(device)]))
        if answer.shape != (len(image),):
            raise StrategyError(f"the input filter answered a batch of {len(image)} inputs with a tensor of shape {tuple(answer.shape)}; it must answer one boolean per input.")
        out[version, image] = answer.bool().cpu()

    first = torch.zeros(count, n, dtype=torch.bool)
    chosen = torch.argsort(torch.rand(n, count, generator=generator), dim=1)  # chosen[i, b]: image i's version in batch b
    for b in range(count):
        image = torch.randperm(n, generator=generator)
        ask(chosen[image, b], image, first)
    second = torch.zeros(count, n, dtype=torch.bool)
    everything = torch.randperm(count * n, generator=generator)
    size = max(1, n // 3 + 1)
    for start in range(0, count * n, size):
        flat = everything[start : start + size]
        ask(flat // n, flat % n, second)
    changed = int((first != second).sum())
    if changed > FILTER_DISAGREEMENT_LIMIT * count * n:
        raise FilterInconsistent(
            f"the input filter answered {changed} of {count * n} inputs differently when asked again in other batches: its answers depend on the batch, "
            "not on the input alone (a filter must judge each input by itself); the cell fails."
        )
    return [first[v].to(device) for v in range(count)]


def evaluate(model: nn.Module, triggers: list[Trigger], test: Split, input_filter: InputFilter | None = None, seed: int = 0) -> Evaluation:
    """CA and ASR of the deployed system (the model behind the filter, if any) on the test split.
    A filter is asked about clean and triggered inputs together (`filter_answers`, seeded by `seed`)."""
    bad_inputs = [trigger.apply(test.x) for trigger in triggers]
    answers = filter_answers(input_filter, model, [test.x, *bad_inputs], seed) if input_filter is not None else None
    accepted = None if answers is None else answers[0]
    ca = metrics.clean_accuracy(predict(model, test.x), test.y, accepted)
    per_trigger: dict[str, float] = {}
    far: dict[str, float] = {}
    for k, trigger in enumerate(triggers):
        x_bad = bad_inputs[k]
        bad_accepted = None if answers is None else answers[k + 1]
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
