import math

import pytest
import torch

from arena import metrics
from arena.protocol import AllToOne, LabelMap, Untargeted

T = torch.tensor


def test_clean_accuracy_counts_rejected_inputs_as_wrong():
    pred, y = T([0, 1, 2, 3]), T([0, 1, 2, 0])
    assert metrics.clean_accuracy(pred, y) == 0.75
    assert metrics.clean_accuracy(pred, y, accepted=T([True, False, True, True])) == 0.5


def test_all_to_one_asr_ignores_inputs_already_of_the_target_label():
    # true labels: 0 is the target, so only the three others count
    y = T([0, 1, 2, 3])
    pred = T([0, 0, 0, 1])
    assert metrics.attack_success_rate(pred, y, AllToOne(0)) == pytest.approx(2 / 3)
    # a rejected triggered input is not a success
    accepted = T([True, False, True, True])
    assert metrics.attack_success_rate(pred, y, AllToOne(0), accepted) == pytest.approx(1 / 3)


def test_label_map_asr():
    goal = LabelMap((1, 2, 0))  # y -> y+1 mod 3
    y = T([0, 1, 2, 0])
    pred = T([1, 2, 2, 0])
    assert metrics.attack_success_rate(pred, y, goal) == 0.5


def test_untargeted_asr_is_one_minus_accuracy_ratio():
    y = T([0, 1, 2, 3])
    pred = T([0, 0, 0, 3])  # backdoor accuracy 0.5
    assert metrics.attack_success_rate(pred, y, Untargeted(), clean_acc=0.8) == pytest.approx(1 - 0.5 / 0.8)
    with pytest.raises(ValueError):
        metrics.attack_success_rate(pred, y, Untargeted())


def test_untargeted_asr_credits_rejections_only_beyond_the_clean_rejection_rate():
    y = T([0, 1, 2, 3])
    pred = T([0, 0, 0, 3])  # triggered: labels 1 and 2 misclassified
    bad_accepted = T([True, False, False, True])
    # no clean input rejected: both rejections are credited, A_backdoor = 0.5 + 0.5
    assert metrics.attack_success_rate(pred, y, Untargeted(), bad_accepted, clean_acc=1.0, clean_accepted=T([True] * 4)) == pytest.approx(0.0)
    # one clean input rejected too: credit 0.5 - 0.25, A_backdoor = 0.5 + 0.25
    clean_accepted = T([True, False, True, True])
    assert metrics.attack_success_rate(pred, y, Untargeted(), bad_accepted, clean_acc=1.0, clean_accepted=clean_accepted) == pytest.approx(0.25)
    assert metrics.rejection_credit(bad_accepted, clean_accepted, y) == pytest.approx(0.25)
    # a filter that rejects more clean than triggered inputs earns negative credit
    assert metrics.rejection_credit(T([True] * 4), clean_accepted, y) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="clean inputs"):
        metrics.attack_success_rate(pred, y, Untargeted(), bad_accepted, clean_acc=1.0)


def _ten_labels_of_a_hundred():
    """Per label 100 inputs; the clean prediction is right on the first 90, the triggered one on
    the first 10 (an untargeted backdoor: ASR 1 - 0.1 / 0.9 unfiltered)."""
    y = torch.arange(10).repeat_interleave(100)
    position = torch.arange(1000) % 100
    clean_pred = torch.where(position < 90, y, (y + 1) % 10)
    bad_pred = torch.where(position < 10, y, (y + 1) % 10)
    return y, clean_pred, bad_pred


def test_a_filter_rejecting_at_random_cannot_lower_untargeted_asr():
    y, clean_pred, bad_pred = _ten_labels_of_a_hundred()
    unfiltered = metrics.attack_success_rate(bad_pred, y, Untargeted(), clean_acc=metrics.clean_accuracy(clean_pred, y))
    assert unfiltered == pytest.approx(1 - 0.1 / 0.9)
    # rejects every other input, clean or triggered alike: half of every label
    half = torch.arange(1000) % 2 == 0
    ca = metrics.clean_accuracy(clean_pred, y, half)
    assert ca == pytest.approx(0.45)
    filtered = metrics.attack_success_rate(bad_pred, y, Untargeted(), half, clean_acc=ca, clean_accepted=half)
    assert filtered == pytest.approx(unfiltered)
    assert metrics.defender_utility(ca, filtered) < metrics.defender_utility(0.9, unfiltered)  # the filter only costs
    # independent random decisions on the clean and on the triggered inputs: on average no gain
    # (per-label credit clipped at zero fails this: chance excesses add up)
    gen = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(300):
        clean_ok, bad_ok = torch.rand(1000, generator=gen) < 0.5, torch.rand(1000, generator=gen) < 0.5
        ca = metrics.clean_accuracy(clean_pred, y, clean_ok)
        draws.append(metrics.attack_success_rate(bad_pred, y, Untargeted(), bad_ok, clean_acc=ca, clean_accepted=clean_ok))
    assert sum(draws) / len(draws) == pytest.approx(unfiltered, abs=0.01)


def test_a_filter_rejecting_exactly_the_triggered_inputs_takes_untargeted_asr_to_zero():
    y, clean_pred, bad_pred = _ten_labels_of_a_hundred()
    everything, nothing = torch.ones(1000, dtype=torch.bool), torch.zeros(1000, dtype=torch.bool)
    asr = metrics.attack_success_rate(bad_pred, y, Untargeted(), nothing, clean_acc=0.9, clean_accepted=everything)
    assert asr == 0.0


def test_a_random_filter_scales_targeted_ca_and_asr_alike():
    y = torch.arange(10).repeat_interleave(100)
    bad_pred = torch.zeros(1000, dtype=torch.long)  # every triggered input goes to target 0
    half = torch.arange(1000) % 2 == 0
    assert metrics.attack_success_rate(bad_pred, y, AllToOne(0)) == 1.0
    assert metrics.attack_success_rate(bad_pred, y, AllToOne(0), half) == pytest.approx(0.5)


def test_headline_asr_is_the_worst_case_and_utility_is_ca_minus_asr():
    assert metrics.headline_asr({"a": 0.2, "b": 0.9, "c": math.nan}) == 0.9
    assert metrics.headline_asr({}) == 0.0
    assert metrics.defender_utility(0.9, 0.25) == pytest.approx(0.65)


def test_filter_rates():
    assert metrics.false_rejection_rate(T([True, True, False, True])) == 0.25
    assert metrics.false_acceptance_rate(T([True, False, False, False])) == 0.25


def test_detection_metrics():
    flagged = [True, False, True, True]
    backdoored = [True, True, False, False]
    assert metrics.detection_rates(flagged, backdoored) == (0.5, 1.0)
    assert metrics.auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert metrics.auroc([0.5, 0.5], [True, False]) == 0.5
    assert metrics.target_hit_rate([[1], [2, 3], []], [[1], [4], []]) == 0.5


def test_detection_summary_of_one_defender():
    # two backdoored models (targets 3 and 5), two honest ones; one false positive
    summary = metrics.detection_summary(
        flagged=[True, False, True, False],
        scores=[4.0, 1.5, 2.5, 1.0],
        backdoored=[True, True, False, False],
        suspected=[[3], [], [7], []],
        true_targets=[[3], [5], [], []],
    )
    assert summary == {"backdoored": 2, "honest": 2, "tpr": 0.5, "fpr": 0.5, "auroc": 0.75, "target_hit": 0.5}
