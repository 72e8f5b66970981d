from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arena.capabilities import Prunable
from arena.outliers import anomaly_indices
from arena.params import Bool, Choice, Float, Int, Space
from arena.protocol import DefenseOutcome, InputFilter, ProgressFn, Split, Verdict, no_progress
from arena.pruning import mean_channel_activation, prune_until
from arena.registry import register_defender
from arena.repair import unlearn
from arena.strategy import Defender, DefenseContext
from arena.training import frozen, predict
from arena.triggers import blend


@dataclass(frozen=True)
class ReversedTrigger:
    """A reverse-engineered trigger: x' = (1 − mask)·x + mask·pattern (arena.triggers.blend)."""

    label: int
    mask: torch.Tensor  # (H, W) in [0, 1]
    pattern: torch.Tensor  # (C, H, W) in [0, 1]
    attack_success: float  # on the clean inputs whose label is not `label`

    @property
    def l1(self) -> float:
        return float(self.mask.abs().sum())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return blend(x, self.mask, self.pattern)


def trigger_success(model: nn.Module, trigger: ReversedTrigger, clean: Split) -> float:
    """Share of the clean inputs of other labels that the reversed trigger sends to its label.

    Inputs of the trigger's own label are left out: the model gives them that label with or
    without the trigger, so counting them would credit the trigger with the clean accuracy on
    that label (about 1/C of the split) and the rate could never fall below it."""
    others = clean.x[clean.y != trigger.label]
    if len(others) == 0:
        return math.nan
    return float((predict(model, trigger.apply(others)) == trigger.label).float().mean())


def reverse_engineer(model: nn.Module, clean: Split, num_classes: int, p: dict, generator: torch.Generator, progress: ProgressFn = no_progress) -> list[ReversedTrigger]:
    """Neural Cleanse's optimisation, for every label at once: for each label k,
    min CE(f(A(x, m_k, Δ_k)), k) + λ_k·|m_k|₁, with λ_k raised while label k's reversed trigger
    succeeds (≥ `target_success`) and lowered while it does not, keeping its smallest successful
    mask (the schedule of the paper's released code).

    The labels' searches are independent, as in the paper; they are batched: each step draws
    every label its own batch from the whole clean split, stamps each with that label's trigger,
    and runs one forward and backward pass over all of them. The loss is the sum of the labels'
    losses, so each label's gradient is its own, and Adam's update is elementwise, so one
    optimiser over the stacked masks and patterns is each label's own optimiser. Success is
    counted on each batch's inputs of other labels only (see `trigger_success`)."""
    _, c, h, w = clean.x.shape
    k_all, b = num_classes, p["nc_batch_size"]
    device = clean.device
    mask_raw = (torch.randn(k_all, h, w, generator=generator) * 0.1).to(device).requires_grad_()  # drawn on the CPU generator
    pattern_raw = (torch.randn(k_all, c, h, w, generator=generator) * 0.1).to(device).requires_grad_()
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=p["nc_lr"], betas=(0.5, 0.9))
    labels = torch.arange(k_all, device=device)
    targets = labels.repeat_interleave(b)
    cost = [float(p["init_cost"])] * k_all
    best: list[tuple[float, torch.Tensor, torch.Tensor] | None] = [None] * k_all
    up, down = [0] * k_all, [0] * k_all
    steps = p["nc_steps"]
    with frozen(model):
        for step in range(steps):
            idx = torch.randint(0, len(clean), (k_all, b), generator=generator).to(device)
            mask = (torch.tanh(mask_raw) + 1) / 2
            pattern = (torch.tanh(pattern_raw) + 1) / 2
            stamped = blend(clean.x[idx], mask[:, None, None], pattern[:, None])  # (labels, batch, C, H, W)
            logits = model(stamped.reshape(k_all * b, c, h, w))
            per_label = F.cross_entropy(logits, targets, reduction="none").view(k_all, b).mean(dim=1)
            sizes = mask.sum(dim=(1, 2))
            loss = (per_label + torch.tensor(cost, device=device) * sizes).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                others = clean.y[idx] != labels[:, None]
                hits = ((logits.argmax(1).view(k_all, b) == labels[:, None]) & others).sum(dim=1)
                success = torch.where(others.sum(dim=1) > 0, hits / others.sum(dim=1).clamp(min=1), torch.zeros_like(hits, dtype=torch.float)).tolist()
                size_list = sizes.detach().tolist()
            for k in range(k_all):
                if success[k] >= p["target_success"]:
                    kept = best[k]
                    if kept is None or size_list[k] < kept[0]:
                        best[k] = (size_list[k], mask[k].detach().clone(), pattern[k].detach().clone())
                    up[k], down[k] = up[k] + 1, 0
                else:
                    up[k], down[k] = 0, down[k] + 1
                if up[k] >= p["patience"]:
                    cost[k], up[k] = cost[k] * 1.5, 0
                elif down[k] >= p["patience"]:
                    cost[k], down[k] = cost[k] / 1.5**1.5, 0
            if (step + 1) % 50 == 0 or step + 1 == steps:
                progress("reverse-engineer triggers", step + 1, steps)
    triggers = []
    for k in range(k_all):
        found = best[k]
        if found is None:  # never succeeded: the whole last state stands, its size says "hard to reach"
            mask_k, pattern_k = ((torch.tanh(mask_raw[k]) + 1) / 2).detach(), ((torch.tanh(pattern_raw[k]) + 1) / 2).detach()
        else:
            _, mask_k, pattern_k = found
        triggers.append(ReversedTrigger(k, mask_k, pattern_k, trigger_success(model, ReversedTrigger(k, mask_k, pattern_k, math.nan), clean)))
    return triggers


@torch.no_grad()
def neuron_activations(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Second-to-last-layer activations (N, neurons): the dense hidden layer where the model has
    one, else the last conv layer's channel means."""
    model.eval()
    if hasattr(model, "hidden_activations"):
        parts = [model.hidden_activations(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        parts = [model.last_conv_activations(x[i : i + batch_size]).mean(dim=(2, 3)) for i in range(0, len(x), batch_size)]
    return torch.cat(parts)


class ActivationFilter(InputFilter):
    """Neural Cleanse's input filter: reject inputs that excite the reversed trigger's neurons."""

    def __init__(self, neurons: torch.Tensor, threshold: float) -> None:
        self.neurons = neurons
        self.threshold = threshold

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return neuron_activations(model, x)[:, self.neurons].mean(1) <= self.threshold


@dataclass(frozen=True)
class PruneReport:
    """What the pruning mitigation did and why it stopped."""

    channels: list[int]  # pruned, in order
    stopped: str  # "trigger": the reversed triggers stopped working; "accuracy": the next channel would cross max_accuracy_drop; "exhausted": one channel left
    trigger_success: float  # the flagged reversed triggers' largest success on clean inputs of other labels, after pruning
    accuracy_drop: float  # clean-split accuracy lost, after pruning


@register_defender
class NeuralCleanse(Defender):
    """Reverse-engineer a minimal trigger per label, flag labels whose trigger is an outlier, unlearn it.

    Paper: Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
    Networks" (S&P 2019). For every label, optimise a mask and pattern on the clean split with
    `CE + λ·|m|₁` (λ adapted so the reversed trigger keeps succeeding); take the masks' L1 norms;
    the anomaly index of a label is its deviation below the median over 1.4826·MAD
    (arena/outliers.py); labels above 2 are flagged. Mitigation: `unlearning` (arena/repair.py)
    fine-tunes on clean inputs, a share of them stamped with the flagged labels' reversed
    triggers and kept at their true labels; `pruning` (arena.pruning's `prune_until`) removes
    the last-conv channels with the largest activation gap between reversed-trigger and clean
    inputs until the reversed trigger stops working (it sends at most `stop_success` of the
    clean inputs of other labels to its label) or the next channel would cost more than
    `max_accuracy_drop` of clean accuracy. A reversed trigger's success is counted on clean
    inputs whose label is not its own (version 1 counted the whole split, whose images of that
    label, about 1/C of it, held the rate above the stop, so pruning ran to the accuracy limit).
    Input filter (`input_filter: true`, the paper's "filter for detecting adversarial inputs"):
    the `filter_neurons` share of second-to-last-layer neurons with the largest activation gap
    between reversed-trigger and clean inputs is watched, and inputs whose mean activation over
    them exceeds the `1 − filter_frr` quantile of clean inputs are rejected (the paper
    calibrates to 5% false rejections). It is built on the model that is deployed (after any
    mitigation). Deviations: fewer optimisation steps than the released code (`nc_steps`);
    models without a dense hidden layer fall back to last-conv channel means for the filter.
    Attacks on its assumptions (one small trigger, in one place, that sends every label to the
    target): `large_trigger`, `post_it` (no fixed place), `adaptive_patch` (partial triggers and
    cover samples), `tact` (source classes only), `all_to_all`, `multi_trigger`.
    """

    name = "neural_cleanse"
    version = "4"  # 3: the harness seeds defenses from what they hold (issue #17); 4: every label's search in one batched optimisation (issue #18)
    paper = "Wang et al. Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks (S&P 2019)"
    deviations = "shorter optimisation (nc_steps); input filter falls back to last-conv channels without a dense hidden layer"
    min_clean = 20
    space = Space(
        nc_steps=Int(400, 10, 100_000, help="optimisation steps per label"),
        nc_lr=Float(0.1, 1e-5, 10.0, log=True, help="Adam learning rate of the trigger search"),
        nc_batch_size=Int(64, 1, 4096, help="clean images per step"),
        init_cost=Float(1e-3, 1e-8, 10.0, log=True, help="initial λ", search=(1e-4, 1e-2)),
        patience=Int(10, 1, 10_000, help="steps before λ is adjusted"),
        target_success=Float(0.99, 0.0, 1.0, low_open=True, help="attack success a reversed trigger must reach"),
        threshold=Float(2.0, 0.0, 100.0, low_open=True, help="anomaly index above which a label is flagged", search=(1.5, 3.0)),
        mitigation=Choice("unlearning", options=("unlearning", "pruning", "none"), help="what to do with a flagged model", search=True),
        unlearn_rate=Float(0.2, 0.0, 1.0, low_open=True, help="share of clean samples stamped with the reversed trigger", search=(0.1, 0.5)),
        unlearn_epochs=Int(5, 1, 10_000, help="epochs of unlearning fine-tuning on the clean split", search=(2, 10)),
        unlearn_lr=Float(1e-3, 1e-6, 1.0, log=True, help="Adam learning rate of unlearning"),
        max_accuracy_drop=Float(0.05, 0.0, 1.0, help="pruning mitigation stops before this clean-accuracy drop"),
        stop_success=Float(0.05, 0.0, 1.0, help="pruning mitigation stops once the reversed trigger succeeds on at most this share of other labels' clean inputs"),
        input_filter=Bool(False, help="also deploy the activation-based input filter of a flagged model", search=True),
        filter_neurons=Float(0.01, 0.0, 1.0, low_open=True, help="share of neurons the input filter watches"),
        filter_frr=Float(0.05, 0.0, 1.0, low_open=True, help="false rejection rate the input filter is calibrated to"),
    )

    def reverse_all(self, model: nn.Module, ctx: DefenseContext) -> list[ReversedTrigger]:
        return reverse_engineer(model, ctx.clean, ctx.task.num_classes, self.params, ctx.generator, ctx.progress)

    def required_capabilities(self) -> tuple[type, ...]:
        return (Prunable,) if self.params["mitigation"] == "pruning" else ()

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        model.eval()
        triggers = self.reverse_all(model, ctx)
        index = anomaly_indices(torch.tensor([t.l1 for t in triggers]))
        flagged = [t.label for t in triggers if float(index[t.label]) > self.params["threshold"]]
        verdict = Verdict(flagged=bool(flagged), score=float(index.max()), labels=tuple(flagged))
        if not flagged:
            return DefenseOutcome(verdict=verdict)
        reversed_flagged = [t for t in triggers if t.label in flagged]
        repaired = None
        if self.params["mitigation"] == "unlearning":
            repaired = self._unlearn(model, ctx, reversed_flagged)
        elif self.params["mitigation"] == "pruning":
            self.prune(model, ctx, reversed_flagged)
            repaired = model
        input_filter = self._filter(repaired or model, ctx, reversed_flagged) if self.params["input_filter"] else None
        return DefenseOutcome(model=repaired, input_filter=input_filter, verdict=verdict)

    def _filter(self, model: nn.Module, ctx: DefenseContext, triggers: list[ReversedTrigger]) -> ActivationFilter:
        clean = ctx.clean.x
        clean_act = neuron_activations(model, clean)
        gap = sum(neuron_activations(model, t.apply(clean)).mean(0) for t in triggers) / len(triggers) - clean_act.mean(0)
        count = max(1, round(self.params["filter_neurons"] * len(gap)))
        neurons = torch.argsort(gap, descending=True)[:count]
        threshold = float(torch.quantile(clean_act[:, neurons].mean(1), 1 - self.params["filter_frr"]))
        return ActivationFilter(neurons, threshold)

    def _unlearn(self, model: nn.Module, ctx: DefenseContext, triggers: list[ReversedTrigger]) -> nn.Module:
        def stamp(subset: Split) -> Split:  # the drawn share, dealt round-robin to the flagged labels' triggers
            stamped = torch.cat([t.apply(subset.x[i :: len(triggers)]) for i, t in enumerate(triggers)])
            return Split(stamped, torch.cat([subset.y[i :: len(triggers)] for i in range(len(triggers))]))

        p = self.params
        return unlearn(model, ctx.clean, p["unlearn_rate"], stamp, p["unlearn_epochs"], p["unlearn_lr"], ctx.generator, stage="unlearn", progress=ctx.progress)

    def prune(self, model: nn.Module, ctx: DefenseContext, triggers: list[ReversedTrigger]) -> PruneReport:
        """The pruning mitigation: remove last-conv channels in decreasing order of their activation
        gap (reversed-trigger minus clean inputs) until every flagged reversed trigger succeeds on
        at most `stop_success` of the clean inputs of other labels, or until the next channel would
        cost more than `max_accuracy_drop` of clean accuracy (that channel is kept); arena.pruning's
        `prune_until`, at least one channel kept."""
        clean = ctx.clean
        gap = sum(mean_channel_activation(model, t.apply(clean.x)) for t in triggers) / len(triggers) - mean_channel_activation(model, clean.x)
        success = lambda: max(trigger_success(model, t, clean) for t in triggers)  # noqa: E731
        order = torch.argsort(gap, descending=True).tolist()[: len(gap) - 1]
        result = prune_until(model, order, clean, self.params["max_accuracy_drop"], stop=lambda: success() <= self.params["stop_success"])
        return PruneReport(result.channels, "trigger" if result.stopped == "stop" else result.stopped, success(), result.accuracy_drop)
