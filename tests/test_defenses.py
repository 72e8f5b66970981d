"""Neural Cleanse and STRIP on small backdoored digits models: they do what they claim."""

import pytest
import torch

from arena.match import prepare, run_match
from arena.store import ArtifactStore
from defenders.neural_cleanse import anomaly_indices

# Detection on 8x8 digits is less clear-cut than on 28x28 images (a handful of pixels turns
# many digits into others), so these tests use a 10% clean budget and the default search.
NC = {}


@pytest.fixture(scope="module")
def store(shared_home):
    return ArtifactStore(shared_home)


def test_anomaly_index_is_the_lower_side_mad_score():
    norms = torch.tensor([10.0, 11.0, 9.0, 10.0, 12.0, 2.0])
    index = anomaly_indices(norms)
    # median 10, |dev| = [0,1,1,0,2,8], MAD = 1.4826 * 1
    assert index[5] == pytest.approx(8 / 1.4826)
    assert index[4] == pytest.approx(-2 / 1.4826)  # above the median: negative, never flagged
    assert (index > 2).nonzero().flatten().tolist() == [5]


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


def test_neural_cleanse_pruning_mitigation_lowers_the_attack(store):
    result = run_match(prepare("badnets", "neural_cleanse", defender_params={**NC, "mitigation": "pruning", "max_accuracy_drop": 0.1}, clean_budget=0.1), store).to_json()
    assert result["defended"]["verdict"]["flagged"]
    # pruning stops once the reversed trigger dies, which on digits is before the real one does:
    # how much of the real backdoor goes with it depends on the search's draws (1.0 -> 0.84 with
    # the current spec key, below 0.8 with the previous one)
    assert result["defended"]["asr"] < result["attacked"]["asr"] - 0.1


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
    from defenders.feature_squeezing import median_smooth, reduce_bit_depth

    x = torch.rand(3, 1, 8, 8)
    for window in (2, 3, 5):
        assert median_smooth(x, window).shape == x.shape
    assert set(reduce_bit_depth(x, 1).unique().tolist()) <= {0.0, 1.0}
    flat = torch.full((1, 1, 5, 5), 0.5)
    assert torch.equal(median_smooth(flat, 3), flat)


def test_neural_cleanse_input_filter_rejects_triggered_inputs_at_its_calibrated_rate(store):
    params = {**NC, "mitigation": "none", "input_filter": True, "filter_frr": 0.05}
    result = run_match(prepare("badnets", "neural_cleanse", defender_params=params, clean_budget=0.1), store).to_json()
    defended = result["defended"]
    assert defended["verdict"]["flagged"]
    assert defended["frr"] < 0.12  # calibrated to 5% on the clean split, measured on the test split
    assert defended["far_per_trigger"]["patch"] < 0.2 and defended["asr"] < 0.2
