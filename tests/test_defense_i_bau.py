"""I-BAU on digits: it unlearns a BadNets backdoor that clean fine-tuning of the same length keeps, its
model updates follow the implicit hypergradient, and it refuses bad budgets before any work."""

import math

import pytest
import torch
import torch.nn.functional as F
from arena.defenders.i_bau import NORM_PENALTY, IBau, hypergradient_loss
from conftest import diverging_numerics

from arena.data import clean_count, load_dataset
from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.models import BadNetsCNN, build_model
from arena.protocol import Split, TaskSpec

BUDGET = 0.1  # 126 clean digits: detection-free repair still needs a few images of every class


@pytest.fixture(scope="module")
def badnets_defended(store):
    return run_match(prepare("badnets", "i_bau", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()


@diverging_numerics
def test_i_bau_unlearns_a_badnets_backdoor_and_keeps_clean_accuracy(badnets_defended):
    r = badnets_defended
    assert r["attacked"]["asr"] > 0.9
    assert r["defended"]["asr"] < 0.75
    assert r["defended"]["ca"] > r["honest"]["ca"] - 0.06


def test_i_bau_does_not_wreck_an_honest_model(store):
    r = run_match(prepare("none", "i_bau", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    assert r["defended"]["ca"] > r["honest"]["ca"] - 0.08


@diverging_numerics
def test_i_bau_beats_fine_tuning_for_the_same_steps(store, badnets_defended):
    """Clean fine-tuning with I-BAU's number of model updates, learning rate and batch size, on the
    same clean split, keeps the backdoor; I-BAU's adversarial unlearning removes much of it."""
    p = IBau().params
    per_epoch = math.ceil(clean_count(load_dataset("digits"), BUDGET) / p["batch_size"])
    i_bau_steps = p["rounds"] * max(1, round(p["steps"] / p["rounds"] / per_epoch)) * per_epoch
    fine_tuning_steps = max(1, round(p["steps"] / per_epoch)) * per_epoch  # arena.repair.fine_tune
    assert i_bau_steps == fine_tuning_steps
    same = {k: p[k] for k in ("steps", "lr", "batch_size")}
    tuned = run_match(prepare("badnets", "fine_tuning", defender_params=same, clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    assert tuned["defended"]["asr"] > 0.9
    assert badnets_defended["defended"]["asr"] < tuned["defended"]["asr"] - 0.25


def test_the_update_is_the_fixed_point_hypergradient():
    """The weight gradient of hypergradient_loss is ∇θL₁ + (∂Φ/∂θ)ᵀ v, v = Σ_{k<K} (∂Φ/∂δ)ᵀᵏ ∇δL₁, with
    the Jacobian ∂Φ/∂δ formed explicitly here; and the implicit term is not zero."""
    torch.manual_seed(0)
    model = BadNetsCNN((1, 8, 8), 10).double().eval()
    x, y = torch.rand(12, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (12,))
    delta = torch.randn(1, 8, 8, dtype=torch.float64) * 0.3
    k, eta = 5, 0.1

    def weight_grad(iterations: int) -> list[torch.Tensor]:
        model.zero_grad()
        hypergradient_loss(delta, 1.0, iterations, eta, torch.Generator())(model, x, y).backward()
        return [q.grad.clone() for q in model.parameters()]

    def fixed_point_map(d: torch.Tensor) -> torch.Tensor:
        inner = -F.cross_entropy(model((x + d).clamp(0, 1)), y) + NORM_PENALTY * d.pow(2).sum()
        return d - eta * torch.autograd.grad(inner, d, create_graph=True)[0]

    d = delta.clone().requires_grad_(True)
    outer = F.cross_entropy(model((x + d).clamp(0, 1)), y)
    outer_d = torch.autograd.grad(outer, d, retain_graph=True)[0].flatten()
    outer_w = torch.autograd.grad(outer, list(model.parameters()))
    jacobian = torch.autograd.functional.jacobian(lambda e: fixed_point_map(e.view_as(delta)).flatten(), delta.flatten())
    v = sum(torch.linalg.matrix_power(jacobian.T, i) @ outer_d for i in range(k))
    implicit = torch.autograd.grad(fixed_point_map(d), list(model.parameters()), grad_outputs=v.view_as(delta), allow_unused=True)
    expected = [w + (i if i is not None else 0) for w, i in zip(outer_w, implicit)]
    for got, want in zip(weight_grad(k), expected):
        torch.testing.assert_close(got, want)
    assert max(float((a - b).abs().max()) for a, b in zip(weight_grad(k), weight_grad(0))) > 1e-8


def test_i_bau_runs_on_a_batch_norm_model_without_refitting_its_statistics():
    """As the released code, the unlearning runs in eval mode: a BN model's running statistics stay."""
    task = TaskSpec("digits", 10, (1, 8, 8), "preact_resnet", 1)
    model = build_model(task, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    clean = Split(torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g))
    statistics = [k for k in model.state_dict() if "running" in k or "num_batches" in k]
    before = {k: model.state_dict()[k].clone() for k in statistics}
    outcome = IBau(steps=2, rounds=1, uap_steps=2, batch_size=10).defend(model, task, clean, torch.Generator().manual_seed(0))
    after = outcome.model.state_dict()
    assert statistics and all(torch.equal(before[k], after[k]) for k in statistics)
    assert any(not torch.equal(v, after[k]) for k, v in model.state_dict().items() if k not in statistics)


@pytest.mark.parametrize(("params", "name"), [({"norm_bound": 0.0}, "norm_bound"), ({"norm_bound": -0.1}, "norm_bound"), ({"rounds": 0}, "rounds"), ({"uap_steps": 0}, "uap_steps")])
def test_bad_hyperparameters_are_refused_before_any_work(params, name):
    with pytest.raises(ParamError, match=name):
        prepare("badnets", "i_bau", defender_params=params, clean_budget=BUDGET)
