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


# Two askings may disagree on this share of inputs before the answers are refused: an honest
# filter's threshold (or a served model's argmax) can flip on an input whose score moved in the
# last bit when the batch around it changed size (the kernels block the arithmetic differently).
FILTER_DISAGREEMENT_LIMIT = 0.001
# Round two asks again about a random sample of this many inputs (all of them when fewer): a
# defense whose answers depend on the batch for a share p of inputs shows about 4096 p flips,
# far above the limit's 4 for any p worth cheating for, at a fifth of a round's cost on
# Fashion-MNIST's 2 x 10,000 inputs instead of a whole second round.
SECOND_ROUND_INPUTS = 4096


class FilterInconsistent(StrategyError):
    """A defense's answers (a filter's, or a served model's predictions) that depend on the batch
    they are asked in, not on the input alone."""


def ask_fairly(ask: Callable[[torch.Tensor], torch.Tensor], versions: list[torch.Tensor], seed: int, what: str) -> list[torch.Tensor]:
    """Ask a defense's code `ask(batch) -> one answer per input` about every input of `versions`
    (the clean test inputs, then each trigger's copies of them: equal lengths) so that it cannot
    tell clean from triggered by the asking (docs/design.md §1, "Input filters are queried fairly"):

    - Round one: as many batches as versions; each batch holds one version of every test image,
      a random one per image, in random order. Every batch mixes clean and triggered inputs, and
      no batch holds two versions of one image (whose difference would show the trigger).
    - Round two: a random sample of SECOND_ROUND_INPUTS of the same inputs (all, when fewer),
      reshuffled across batches of another size and mixture.
    - The answers must be a function of the input: where more than FILTER_DISAGREEMENT_LIMIT of
      them differ between the rounds, they are refused (FilterInconsistent), and the cell fails
      with that reason. Round one's answers are returned, one tensor per version.

    A sandboxed defense (arena/sandbox.py) answers each batch from a fresh fork of its worker, so
    nothing carries from one batch to the next; the rounds catch what batch context can still do.
    """
    count, n = len(versions), len(versions[0])
    device = versions[0].device
    stacked = torch.stack(versions)  # (versions, n, C, H, W)
    generator = torch.Generator().manual_seed(seed)
    rounds: list[torch.Tensor] = []

    def ask_batch(version: torch.Tensor, image: torch.Tensor, out: list[torch.Tensor | None]) -> None:
        answer = torch.as_tensor(ask(stacked[version.to(device), image.to(device)])).cpu()
        if answer.shape != (len(image),):
            raise StrategyError(f"the {what} answered a batch of {len(image)} inputs with a tensor of shape {tuple(answer.shape)}; it must answer once per input.")
        table = out[0] if out[0] is not None else torch.zeros(count, n, dtype=answer.dtype)
        table[version, image] = answer
        out[0] = table

    first: list[torch.Tensor | None] = [None]
    chosen = torch.argsort(torch.rand(n, count, generator=generator), dim=1)  # chosen[i, b]: image i's version in batch b
    for b in range(count):
        image = torch.randperm(n, generator=generator)
        ask_batch(chosen[image, b], image, first)
    second: list[torch.Tensor | None] = [None]
    sample = torch.randperm(count * n, generator=generator)[:SECOND_ROUND_INPUTS]
    size = max(1, len(sample) // (count + 1) + 1)
    for start in range(0, len(sample), size):
        flat = sample[start : start + size]
        ask_batch(flat // n, flat % n, second)
    if first[0] is None or second[0] is None:
        return [torch.zeros(0, dtype=torch.bool, device=device) for _ in versions]
    rounds = [first[0], second[0]]
    asked_again = torch.zeros(count * n, dtype=torch.bool)
    asked_again[sample] = True
    changed = int((rounds[0] != rounds[1]).flatten()[asked_again].sum())
    if changed > FILTER_DISAGREEMENT_LIMIT * len(sample):
        raise FilterInconsistent(
            f"the {what} answered {changed} of {len(sample)} inputs differently when asked again in other batches: its answers depend on the batch, "
            "not on the input alone (a defense must judge each input by itself); the cell fails."
        )
    return [rounds[0][v].to(device) for v in range(count)]


def filter_answers(input_filter: InputFilter, model: nn.Module, versions: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The filter's accept/reject answers about `versions`, asked fairly (`ask_fairly`)."""
    return ask_fairly(lambda x: torch.as_tensor(input_filter.accept(model, x)).bool(), versions, seed, "input filter")


class ServedModel(nn.Module):
    """A repaired model that is not the published architecture (e.g. a preprocessing step in
    front of it): its weights cannot be handed back as data, so it stays in the defense's worker
    and the evaluator asks it for predictions the way it asks a filter (`ask_fairly`). Calling it
    directly is refused: every prediction goes through the fair asking."""

    def __init__(self, predict_batch: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.predict_batch = predict_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise StrategyError("a served model answers only through the evaluator's fair asking (arena.evaluator.ask_fairly)")


def predictions(model: nn.Module, versions: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The deployed model's labels for each version: computed here for a model the harness holds,
    asked fairly of a served one."""
    if isinstance(model, ServedModel):
        return ask_fairly(model.predict_batch, versions, seed, "repaired model's predictions")
    return [predict(model, v) for v in versions]


def evaluate(model: nn.Module, triggers: list[Trigger], test: Split, input_filter: InputFilter | None = None, seed: int = 0) -> Evaluation:
    """CA and ASR of the deployed system (the model behind the filter, if any) on the test split.
    A filter is asked about clean and triggered inputs together (`filter_answers`, seeded by `seed`)."""
    bad_inputs = [trigger.apply(test.x) for trigger in triggers]
    versions = [test.x, *bad_inputs]
    answers = filter_answers(input_filter, model, versions, seed) if input_filter is not None else None
    labels = predictions(model, versions, seed + 1)
    accepted = None if answers is None else answers[0]
    ca = metrics.clean_accuracy(labels[0], test.y, accepted)
    per_trigger: dict[str, float] = {}
    far: dict[str, float] = {}
    for k, trigger in enumerate(triggers):
        bad_accepted = None if answers is None else answers[k + 1]
        per_trigger[trigger.name] = metrics.attack_success_rate(
            labels[k + 1], test.y, trigger.goal, bad_accepted, clean_acc=ca, clean_accepted=accepted
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
