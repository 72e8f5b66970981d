"""MESA (Qiao, Yang, Li, NeurIPS 2019) on small digits models: it models the backdoor's trigger
distribution, unlearns it, and the learned distribution is what does the work."""

import copy

import pytest
import torch
from arena.defenders import mesa
from conftest import diverging_numerics

from arena.artifacts import obtain_attacked
from arena.capabilities import not_applicable_reason
from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare, run_match, task_for
from arena.models import build_model
from arena.strategy import DefenseContext
from arena.training import predict

BUDGET = 0.1  # 126 clean samples: on 8x8 digits a 3x3 patch is 14% of the image, and 63 samples leave the search noisy


@diverging_numerics
def test_mesa_flags_the_backdoor_target_and_unlearns_it(store):
    result = run_match(prepare("badnets", "mesa", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    verdict = result["defended"]["verdict"]
    assert verdict["flagged"] and verdict["labels"] == [0] and verdict["score"] >= 0.8
    assert result["attacked"]["asr"] > 0.9 and result["defended"]["asr"] < 0.1
    assert result["defended"]["ca"] > result["honest"]["ca"] - 0.04


def test_mesa_leaves_an_honest_model_alone(store):
    result = run_match(prepare("none", "mesa", clean_budget=BUDGET, architecture="badnets_cnn"), store).to_json()
    assert result["defended"]["verdict"]["flagged"] is False
    assert result["defended"]["ca"] == result["attacked"]["ca"]  # nothing flagged, nothing changed


def test_unlearning_mesa_triggers_beats_unlearning_uniform_patches_of_the_same_size(store):
    """The moving part: the learned trigger distribution. The staircase of the backdoor's target
    (given here, to leave detection out) is unlearned, and so, with the same budget, generator
    seed and share of stamped copies, are patches of uniform pixels at uniform places."""
    prepared = prepare("badnets", "mesa", clean_budget=BUDGET)
    splits = player_splits(load_dataset("digits"), BUDGET)
    model, triggers, _, _ = obtain_attacked(prepared.spec.attack, prepared.attacker, prepared.task, splits, store)
    defender = mesa.Mesa()
    p, clean = defender.params, splits.clean
    staircase = mesa.train_bank(model, clean, [0] * len(defender.betas), list(defender.betas), p, torch.Generator().manual_seed(0))
    learned = mesa.union_sampler([(staircase, list(range(len(defender.betas))))])
    _, channels, height, width = clean.x.shape
    size = p["trigger_size"]
    uniform = mesa.uniform_sampler((channels, size, size), (height - size + 1, width - size + 1), clean.device)

    others = splits.test.x[splits.test.y != 0]
    asr = lambda m: float((predict(m, triggers[0].apply(others)) == 0).float().mean())  # noqa: E731
    with_mesa = mesa.unlearn_with(copy.deepcopy(model), clean, learned, p, torch.Generator().manual_seed(1))
    with_uniform = mesa.unlearn_with(copy.deepcopy(model), clean, uniform, p, torch.Generator().manual_seed(1))
    assert asr(model) > 0.9
    assert asr(with_mesa) < 0.1
    assert asr(with_uniform) > asr(with_mesa) + 0.2
    # the staircase's triggers are valid ones: they still reach the target on most clean images of other labels
    assert mesa.trigger_success(model, learned, clean.x[clean.y != 0], 0, torch.Generator().manual_seed(2)) > 0.6


def test_the_learned_staircase_spreads_its_triggers():
    """The entropy term acts: a sub-generator's patches vary with its noise (one collapsed to a
    single trigger, as without the He initialisation, gives MINE nothing to find)."""
    bank = mesa.GeneratorBank(3, 16, 64, (1, 3, 3), (6, 6), True, torch.Generator().manual_seed(0))
    patches, places = bank.sample(256, torch.Generator().manual_seed(1))
    assert patches.shape == (3, 256, 1, 3, 3) and places.shape == (3, 256, 6, 6)
    assert float(patches.min()) >= 0 and float(patches.max()) <= 1
    assert float(patches.std(1).mean()) > 0.1
    assert torch.equal(places.flatten(2).sum(2), torch.ones(3, 256))


def test_paste_writes_the_patch_at_its_place():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    patches = torch.rand(3, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    rows, cols = torch.tensor([0, 5, 2]), torch.tensor([5, 0, 3])
    places = torch.zeros(3, 6, 6)
    places[torch.arange(3), rows, cols] = 1
    expected = x.clone()
    for i in range(3):
        expected[i, :, rows[i] : rows[i] + 3, cols[i] : cols[i] + 3] = patches[i]
    assert torch.allclose(mesa.paste(x, patches, places), expected)


@pytest.mark.parametrize(
    "params",
    [
        {"trigger_size": 9},  # larger than the 8x8 image
        {"trigger_size": 0},
        {"betas": ""},  # 0 sub-generators
        {"betas": " , "},
        {"betas": "0.9,1.0"},
        {"betas": "0,0.5"},
        {"betas": "0.9,1.5"},
        {"betas": "0.9,-0.2"},
        {"betas": "0.9,high"},
        {"betas": "0.8,0.8"},
        {"detect_success": 0.0},
        {"unlearn_rate": 0.0},
        {"generator_steps": 0},
        {"placement": "anywhere"},
    ],
)
def test_bad_hyperparameters_are_refused_before_any_work(params, monkeypatch):
    monkeypatch.setattr(mesa, "train_bank", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ParamError):
        prepare("badnets", "mesa", defender_params=params)


def test_an_oversized_trigger_is_refused_by_defend_before_any_work(splits, monkeypatch):
    monkeypatch.setattr(mesa, "train_bank", lambda *a, **k: pytest.fail("trained before refusing"))
    defender = mesa.Mesa(trigger_size=9)  # inside the space; the task's 8x8 images cannot hold it
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ParamError, match="does not fit"):
        defender.defend(model, task_for("digits", "badnets_cnn", None), splits.clean, torch.Generator().manual_seed(0))


def test_mesa_needs_no_capability():
    """It only stamps inputs and fine-tunes: both architectures can be defended (no n/a cell)."""
    assert mesa.Mesa.requires == ()
    for architecture in ("badnets_cnn", "preact_resnet"):
        assert not_applicable_reason(mesa.Mesa(), build_model(task_for("digits", architecture, None))) is None


def test_scan_is_deterministic_under_the_generator(splits):
    """All randomness comes from the context's generator: two scans with the same seed agree."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    defender = mesa.Mesa(generator_steps=5)
    task = task_for("digits", "badnets_cnn", None)
    scans = [defender.scan(model, DefenseContext(task, splits.clean, torch.Generator().manual_seed(7)))[1] for _ in range(2)]
    assert scans[0] == scans[1] and len(scans[0]) == 10
