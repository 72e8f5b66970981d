"""Neural Cleanse and STRIP on small backdoored digits models: they do what they claim."""

import copy

import pytest
import torch
from arena.defenders.neural_cleanse import NeuralCleanse

from arena.artifacts import obtain_attacked
from arena.data import load_dataset, player_splits
from arena.match import prepare, run_match
from arena.pruning import pruned_channels
from arena.store import ArtifactStore
from arena.strategy import DefenseContext
from arena.training import predict

# Detection on 8x8 digits is less clear-cut than on 28x28 images (a handful of pixels turns
# many digits into others), so these tests use a 10% clean budget and the default search.
NC = {}


def test_neural_cleanse_flags_the_backdoor_target_and_unlearns_it(store):
    result = run_match(prepare("badnets", "neural_cleanse", defender_params=NC, clean_budget=0.1), store).to_json()
    verdict = result["defended"]["verdict"]
    assert verdict["flagged"] and verdict["labels"] == [0] and verdict["score"] > 2
    assert result["attacked"]["asr"] > 0.9 and result["defended"]["asr"] < 0.3
    assert result["defended"]["ca"] > result["honest"]["ca"] - 0.06


def test_neural_cleanse_does_not_flag_an_honest_model(store):
    result = run_match(prepare("none", "neural_cleanse", defender_params=NC, clean_budget=0.1), store).to_json()
    assert result["defended"]["verdict"]["flagged"] is False
    assert result["defended"]["ca"] == result["attacked"]["ca"]  # nothing flagged, nothing changed


def test_neural_cleanse_pruning_stops_when_the_reversed_trigger_dies(store, monkeypatch):
    """The pruning mitigation stops on its trigger criterion, before the accuracy limit.

    On this digits BadNets model (seed 0, 126 clean samples, the search's generator seeded 0)
    the reversed trigger still works on many of the other labels' clean inputs when the default
    5-point accuracy limit stops pruning, and falls below the stop only after about 25 points of
    clean-split accuracy. So the trigger criterion is shown under a 35-point limit, a test
    setting, not a default.
    """
    prepared = prepare("badnets", "neural_cleanse", clean_budget=0.1)
    splits = player_splits(load_dataset("digits"), 0.1)
    model, triggers, _, _ = obtain_attacked(prepared.spec.attack, prepared.attacker, prepared.task, splits, store)
    calls = []
    original = NeuralCleanse.prune
    monkeypatch.setattr(NeuralCleanse, "prune", lambda self, m, ctx, flagged: calls.append((flagged, original(self, m, ctx, flagged))) or calls[-1][1])

    defender = NeuralCleanse(mitigation="pruning", max_accuracy_drop=0.35)
    outcome = defender.defend(model, prepared.task, splits.clean, torch.Generator().manual_seed(0))
    assert outcome.verdict.labels == (0,)
    (flagged, report), = calls
    stop = defender.params["stop_success"]
    assert report.stopped == "trigger"
    assert report.trigger_success <= stop and report.accuracy_drop < 0.35
    assert pruned_channels(outcome.model) == sorted(report.channels)
    clean = splits.clean
    # counted over the whole clean split (version 1), the label's own images keep the rate above the stop
    whole_split = float((predict(outcome.model, flagged[0].apply(clean.x)) == 0).float().mean())
    assert whole_split > stop
    # the real backdoor goes with the reversed one
    test = splits.test
    asr = lambda m: float((predict(m, triggers[0].apply(test.x[test.y != 0])) == 0).float().mean())  # noqa: E731
    assert asr(model) > 0.9 and asr(outcome.model) < 0.4

    # at the default limit the same trigger outlives pruning: the loop stops on accuracy
    at_default = NeuralCleanse(mitigation="pruning").prune(copy.deepcopy(model), DefenseContext(prepared.task, clean, torch.Generator()), flagged)
    assert at_default.stopped == "accuracy" and at_default.trigger_success > stop
    assert len(at_default.channels) < len(report.channels)


def test_strip_rejects_triggered_inputs_at_its_calibrated_false_rejection_rate(store):
    white = {"trigger_pattern": "white"}  # STRIP's additive blend keeps a white patch intact
    result = run_match(prepare("badnets", "strip", attacker_params=white, clean_budget=0.1), store).to_json()
    assert result["defended"]["frr"] <= 0.05
    assert result["defended"]["far_per_trigger"]["patch"] <= 0.2
    assert result["defended"]["asr"] < 0.2 < result["attacked"]["asr"]
    honest = run_match(prepare("none", "strip", clean_budget=0.1), store).to_json()
    assert honest["defended"]["frr"] <= 0.05 and honest["defended"]["ca"] > honest["honest"]["ca"] - 0.05


def test_too_small_a_clean_budget_names_the_minimum(tmp_path):
    from arena.errors import ParamError

    with pytest.raises(ParamError, match="at least 20 clean samples"):
        run_match(prepare("none", "neural_cleanse", clean_budget=0.01, epochs=1), ArtifactStore(tmp_path))


def test_feature_squeezing_rejects_triggered_inputs_at_its_calibrated_rate(store):
    result = run_match(prepare("badnets", "feature_squeezing", clean_budget=0.1), store).to_json()
    assert result["defended"]["frr"] <= 0.1  # calibrated to 5% on the clean split
    assert result["defended"]["far_per_trigger"]["patch"] <= 0.2
    assert result["defended"]["asr"] < 0.2 < result["attacked"]["asr"]


def test_median_smoothing_keeps_the_shape_for_even_and_odd_windows():
    from arena.defenders.feature_squeezing import median_smooth, reduce_bit_depth

    x = torch.rand(3, 1, 8, 8)
    for window in (2, 3, 5):
        assert median_smooth(x, window).shape == x.shape
    assert set(reduce_bit_depth(x, 1).unique().tolist()) <= {0.0, 1.0}
    flat = torch.full((1, 1, 5, 5), 0.5)
    assert torch.equal(median_smooth(flat, 3), flat)


def test_neural_cleanse_input_filter_rejects_triggered_inputs_at_its_calibrated_rate(store):
    # A filter returned with a verdict is the defense's mitigation: the flagged model is deployed
    # behind it, not replaced by the fallback (the verdict rule, docs/design.md §3).
    params = {**NC, "mitigation": "none", "input_filter": True, "filter_frr": 0.05}
    result = run_match(prepare("badnets", "neural_cleanse", defender_params=params, clean_budget=0.1), store).to_json()
    defended = result["defended"]
    assert defended["verdict"]["flagged"] and defended["deployed"] == "published"
    assert defended["frr"] < 0.12  # calibrated to 5% on the clean split, measured on the test split
    assert defended["far_per_trigger"]["patch"] < 0.2 and defended["asr"] < 0.2
