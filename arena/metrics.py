"""Every metric of DESIGN.md §3, as pure functions of predictions, labels and acceptances."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from arena.protocol import Goal, Untargeted


def _accepted(pred: torch.Tensor, accepted: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(pred, dtype=torch.bool) if accepted is None else accepted.bool()


def clean_accuracy(pred: torch.Tensor, y: torch.Tensor, accepted: torch.Tensor | None = None) -> float:
    """CA: fraction of clean inputs accepted by the filter and classified correctly."""
    if len(y) == 0:
        return math.nan
    return float(((pred == y) & _accepted(pred, accepted)).float().mean())


def attack_success_rate(
    pred: torch.Tensor,
    y: torch.Tensor,
    goal: Goal,
    accepted: torch.Tensor | None = None,
    clean_acc: float | None = None,
) -> float:
    """ASR of one trigger on triggered inputs with true labels y.

    Targeted goals (all-to-one, label map): over inputs whose true label differs from the goal
    label, the fraction accepted and classified as the goal label.
    Untargeted: 1 - A_backdoor / A_clean (Fine-Pruning), where a rejected triggered input counts
    as defended (correct); needs `clean_acc`, the CA of the same model and filter. Clipped to
    [0, 1]; a model with no clean accuracy has no backdoor to measure and scores 0.
    """
    ok = _accepted(pred, accepted)
    if isinstance(goal, Untargeted):
        if clean_acc is None:
            raise ValueError("untargeted ASR needs the clean accuracy of the same model")
        if len(y) == 0 or clean_acc <= 0:
            return 0.0
        backdoor_acc = float(((pred == y) | ~ok).float().mean())
        return float(min(1.0, max(0.0, 1.0 - backdoor_acc / clean_acc)))
    eligible = goal.eligible(y)
    if not bool(eligible.any()):
        return math.nan
    hit = (pred == goal.targets(y)) & ok
    return float(hit[eligible].float().mean())


def headline_asr(per_trigger: Mapping[str, float]) -> float:
    """The defender's worst case over several triggers: the maximum ASR."""
    values = [v for v in per_trigger.values() if not math.isnan(v)]
    return max(values) if values else 0.0


def defender_utility(ca: float, asr: float) -> float:
    """u_D = CA - ASR (Fine-Pruning); the zero-sum attacker utility is its negation."""
    return ca - asr


def false_rejection_rate(accepted: torch.Tensor) -> float:
    """FRR of an input filter on clean inputs."""
    return float((~accepted.bool()).float().mean()) if len(accepted) else math.nan


def false_acceptance_rate(accepted: torch.Tensor) -> float:
    """FAR of an input filter on triggered inputs."""
    return float(accepted.bool().float().mean()) if len(accepted) else math.nan


# ---------------------------------------------------------------------------------------------
# Detection, over the verdicts of many models (honest ones included)


def detection_rates(flagged: Sequence[bool], backdoored: Sequence[bool]) -> tuple[float, float]:
    """(TPR, FPR) of model-level verdicts; NaN where a class has no models."""
    f = np.asarray(flagged, dtype=bool)
    b = np.asarray(backdoored, dtype=bool)
    tpr = float(f[b].mean()) if b.any() else math.nan
    fpr = float(f[~b].mean()) if (~b).any() else math.nan
    return tpr, fpr


def auroc(scores: Sequence[float], backdoored: Sequence[bool]) -> float:
    """Area under the ROC curve of verdict scores (higher = more suspicious); ties count half."""
    s = np.asarray(scores, dtype=float)
    b = np.asarray(backdoored, dtype=bool)
    pos, neg = s[b], s[~b]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def target_hit_rate(suspected: Sequence[Sequence[int]], true_targets: Sequence[Sequence[int]]) -> float:
    """Over backdoored models with a known target, the fraction whose suspects include a true target."""
    pairs = [(set(s), set(t)) for s, t in zip(suspected, true_targets) if t]
    if not pairs:
        return math.nan
    return float(np.mean([bool(s & t) for s, t in pairs]))
