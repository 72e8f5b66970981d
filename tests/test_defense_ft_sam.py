"""FT-SAM on digits: sharpness-aware fine-tuning weakens a BadNets backdoor that plain fine-tuning of the
same length keeps; fit's adaptive SAM moves each weight in proportion to its magnitude."""

import pytest
import torch
from torch import nn

from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.training import _ascend_to_sharpest

BUDGET = 0.1  # 126 clean digits


@pytest.fixture(scope="module")
def badnets_defended(store):
    return run_match(prepare("badnets", "ft_sam", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()


def test_ft_sam_weakens_a_badnets_backdoor_and_keeps_clean_accuracy(badnets_defended):
    r = badnets_defended
    assert r["attacked"]["asr"] > 0.9
    assert r["defended"]["asr"] < 0.9
    assert r["defended"]["ca"] > r["honest"]["ca"] - 0.05


def test_ft_sam_does_not_wreck_an_honest_model(store):
    r = run_match(prepare("none", "ft_sam", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    assert r["defended"]["ca"] > r["honest"]["ca"] - 0.05


def test_without_sharpness_the_same_fine_tuning_keeps_the_backdoor(store, badnets_defended):
    """rho = 0 is the same fine-tuning (steps, learning rate, batches, label smoothing) without SAM."""
    plain = run_match(prepare("badnets", "ft_sam", defender_params={"rho": 0.0}, clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    assert plain["defended"]["asr"] > 0.9
    assert badnets_defended["defended"]["asr"] < plain["defended"]["asr"] - 0.15


def test_adaptive_sam_moves_each_weight_by_rho_w2_g_over_the_scaled_gradient_norm():
    layer = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0, -1.0]]))
    layer.weight.grad = torch.tensor([[1.0, 5.0, 2.0]])
    seen = []

    def loss() -> torch.Tensor:
        seen.append(layer.weight.detach().clone())
        return layer.weight.sum()

    _ascend_to_sharpest([layer.weight], 0.5, loss, adaptive=True)
    w, g = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 5.0, 2.0])
    move = 0.5 * w**2 * g / torch.linalg.vector_norm(w.abs() * g)
    torch.testing.assert_close(seen[0].flatten(), w + move)  # the zero weight does not move, whatever its gradient
    torch.testing.assert_close(layer.weight.detach().flatten(), w)  # moved back
    torch.testing.assert_close(layer.weight.grad.flatten(), torch.ones(3))  # the gradient at the moved weights


@pytest.mark.parametrize(("params", "name"), [({"rho": -0.1}, "rho"), ({"label_smoothing": 1.0}, "label_smoothing")])
def test_bad_hyperparameters_are_refused_before_any_work(params, name):
    with pytest.raises(ParamError, match=name):
        prepare("badnets", "ft_sam", defender_params=params, clean_budget=BUDGET)
