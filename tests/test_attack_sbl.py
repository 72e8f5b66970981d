"""Sequential backdoor learning (`sbl`) on digits: the backdoor works and is stealthy, its flat
task-1 solution outlives a fine-tuning that removes a plain BadNets backdoor, its EWC regulariser
is what keeps the backdoor through clean training, and bad inputs are refused before training."""

import pytest
import torch
from conftest import diverging_numerics

from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.registry import ATTACKERS, DEFENDERS
from arena.training import predict

# A fine-tuning strong enough to strip most of a BadNets backdoor on digits: at the defaults
# (lr 1e-3) it leaves BadNets' ASR above 0.9; at 5e-3 it is about 0.4 (clean accuracy pays too).
STRONG_FINE_TUNING = {"lr": 5e-3}


def _asr(model, trigger, test):
    """Share of the test inputs outside the target label that the trigger sends to the target."""
    others = test.x[test.y != trigger.goal.target]
    return float((predict(model, trigger.apply(others)) == trigger.goal.target).float().mean())


def test_sbl_plants_a_working_stealthy_backdoor(store):
    result = run_match(prepare("sbl", "none", seed=0), store).to_json()
    assert result["attacked"]["asr"] > 0.9, result["attacked"]
    assert result["stealthy"], (result["attacked"]["ca"], result["honest"]["ca"])


def test_a_flat_backdoor_outlives_fine_tuning_that_strips_badnets(splits):
    """The paper's claim, on digits: the same fine-tuning (3 defender draws per model) removes
    most of a BadNets backdoor and less of SBL's. The gain comes from the flatness of task 1
    and needs a SAM radius of 0.5 (the top of its declared search range): at the paper's 0.05
    the two were not told apart on digits."""
    task = prepare("badnets", "none").task

    def survival(attacker, params, seed):
        out = ATTACKERS.create(attacker, params).attack(task, splits.attacker, torch.Generator().manual_seed(seed))
        assert _asr(out.model, out.triggers[0], splits.test) > 0.95
        tuned = [DEFENDERS.create("fine_tuning", STRONG_FINE_TUNING).defend(out.model, task, splits.clean, torch.Generator().manual_seed(11 + d)).model for d in range(3)]
        return sum(_asr(m, out.triggers[0], splits.test) for m in tuned) / len(tuned)

    badnets = [survival("badnets", {}, seed) for seed in (0, 1)]
    sbl = [survival("sbl", {"sharpness_radius": 0.5}, seed) for seed in (0, 1)]
    assert max(badnets) < 0.7, badnets  # the fine-tuning really removes most of a plain backdoor
    assert all(s > b for s, b in zip(sbl, badnets)), (sbl, badnets)
    assert sum(sbl) / 2 > sum(badnets) / 2 + 0.2, (sbl, badnets)


@diverging_numerics
def test_ewc_keeps_the_backdoor_through_clean_training(splits):
    """Task 2 is clean training, the defender's fine-tuning done in advance: run hard (half the
    budget at lr 1e-2) it forgets the backdoor, and EWC's anchor on task 1's important weights
    is what keeps it."""
    task = prepare("sbl", "none").task
    hard = {"task1_share": 0.5, "task2_lr": 1e-2}

    def asr(ewc_weight):
        out = ATTACKERS.create("sbl", {**hard, "ewc_weight": ewc_weight}).attack(task, splits.attacker, torch.Generator().manual_seed(0))
        return _asr(out.model, out.triggers[0], splits.test)

    assert asr(0.0) < 0.3  # measured 0.11
    assert asr(10_000.0) > 0.9  # measured 0.99 (0.84 on an AMX machine: conftest.NUMERICS_DIVERGE)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"task1_share": 0.0}, "task1_share"),
        ({"task1_share": 1.0}, "strictly between 0 and 1"),
        ({"task1_share": 1.5}, "task1_share"),
        ({"clean_holdout": 1.0}, "strictly between 0 and 1"),
        ({"clean_holdout": -0.1}, "clean_holdout"),
        ({"sharpness_radius": -0.05}, "sharpness_radius"),
        ({"task2_sharpness_radius": -1.0}, "task2_sharpness_radius"),
        ({"ewc_weight": -1.0}, "ewc_weight"),
        ({"task2_lr": 0.0}, "task2_lr"),
        ({"trigger_size": 9}, "does not fit"),
        ({"target": 10}, "not a label"),
    ],
)
def test_bad_sbl_hyperparameters_fail_before_training(monkeypatch, params, message):
    import arena.attackers.sbl as module

    monkeypatch.setattr(module, "fit", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ParamError, match=message):
        prepare("sbl", "none", attacker_params=params)
