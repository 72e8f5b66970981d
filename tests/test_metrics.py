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
    # rejected triggered inputs count as defended: accuracy 0.75 with the second one rejected... and the third
    accepted = T([True, False, False, True])
    assert metrics.attack_success_rate(pred, y, Untargeted(), accepted, clean_acc=1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        metrics.attack_success_rate(pred, y, Untargeted())


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
