"""End to end on `digits`: the backdoor works, the defense lowers it, the store reuses and verifies."""

import pytest
import torch

from arena.artifacts import obtain_attacked
from arena.attacks import patch_trigger
from arena.data import load_dataset, player_splits
from arena.errors import ArtifactIntegrityError, ParamError
from arena.match import evaluate, prepare, run_match
from arena.store import ArtifactStore


@pytest.fixture(scope="module")
def headline(store):
    return run_match(prepare("pruning_aware", "fine_pruning"), store).to_json()


def test_badnets_backdoor_works_and_is_stealthy(store):
    result = run_match(prepare("badnets", "none"), store).to_json()
    assert result["attacked"]["asr"] > 0.9
    assert result["stealthy"] and abs(result["attacked"]["ca"] - result["honest"]["ca"]) < 0.03
    # deploying as is changes nothing
    assert result["defended"]["ca"] == result["attacked"]["ca"] and result["defended"]["asr"] == result["attacked"]["asr"]


def test_the_published_model_deployed_as_it_is_is_not_evaluated_twice(store, monkeypatch):
    """No defense, an n/a cell or a verdict that clears the model deploys the system the attack
    stage evaluated: the defense stage takes its figures rather than computing them again."""
    from arena import match

    run_match(prepare("badnets", "none"), store)  # the models trained and their evaluations made
    calls = []
    original = match.evaluate
    monkeypatch.setattr(match, "evaluate", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    result = run_match(prepare("badnets", "none"), store).to_json()
    assert len(calls) == 2  # the attacked and the honest model (attack stages), not the deployed one again
    assert result["defended"]["asr"] == result["attacked"]["asr"] > 0.9
    calls.clear()
    run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 5}), store)
    assert len(calls) == 3  # a repaired model is evaluated


def test_honest_model_does_not_answer_the_trigger(store):
    badnets, honest = prepare("badnets", "none"), prepare("none", "none")
    splits = _splits()
    model, triggers, _, _ = obtain_attacked(honest.spec.attack, honest.attacker, honest.task, splits, store)
    assert triggers == []
    trigger = patch_trigger(badnets.attacker.params, badnets.task)
    assert evaluate(model, [trigger], splits.test).asr < 0.2


def _splits():
    return player_splits(load_dataset("digits"), 0.05)


def test_headline_pruning_aware_survives_pruning_but_not_fine_pruning(store, headline):
    assert headline["attacked"]["asr"] > 0.9 and headline["stealthy"]
    assert headline["defended"]["asr"] < headline["attacked"]["asr"] - 0.3
    assert headline["defended"]["ca"] > headline["honest"]["ca"] - 0.1

    def pruned(attacker, **params):
        return run_match(prepare(attacker, "pruning", defender_params=params), store).to_json()["defended"]["asr"]

    # At the paper's 4% threshold plain BadNets survives pruning on digits as well (its backdoor
    # shares the channels clean inputs use), so the default cannot tell the attack from its
    # baseline. A 30-point accuracy limit can, on this seed: pruning reaches the BadNets backdoor
    # and the pruning-aware one, trained into the channels the defender keeps, stays whole. On seeds 1 and 2 BadNets outlives even that prune (measured while
    # writing this test), so the contrast is this seed's, not a property of every digits model.
    assert pruned("pruning_aware") > 0.9 and pruned("badnets") > 0.9
    assert pruned("pruning_aware", max_accuracy_drop=0.3) > 0.9
    assert pruned("badnets", max_accuracy_drop=0.3) < 0.5


def test_second_run_takes_the_model_from_the_store_with_identical_numbers(store, headline):
    again = run_match(prepare("pruning_aware", "fine_pruning"), store).to_json()
    assert again["cached"]
    for key in ("honest", "attacked", "defended", "utility", "artifact_sha256"):
        assert again[key] == headline[key]


def test_same_spec_and_seed_give_the_same_numbers_in_a_fresh_store(tmp_path, store):
    spec = dict(epochs=3)
    first = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 20}, **spec), ArtifactStore(tmp_path / "a")).to_json()
    second = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 20}, **spec), ArtifactStore(tmp_path / "b")).to_json()
    assert not first["cached"] and not second["cached"]
    assert first["artifact_sha256"] == second["artifact_sha256"]
    for key in ("honest", "attacked", "defended", "utility"):
        assert first[key] == second[key]
    other_seed = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 20}, seed=1, **spec), ArtifactStore(tmp_path / "a")).to_json()
    assert other_seed["artifact_sha256"] != first["artifact_sha256"]


def test_tampered_attacked_model_is_refused_and_kept(tmp_path):
    store = ArtifactStore(tmp_path)
    prepared = prepare("badnets", "none", epochs=1)
    result = run_match(prepared, store)
    blob = store.blob_path(result.artifact_sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        run_match(prepared, store)
    assert blob.read_bytes() == bytes(data)  # nothing deleted behind the user's back


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attacker_params": {"target": 10}}, "not a label"),
        ({"attacker_params": {"trigger_size": 8}}, "does not fit"),
        ({"attacker_params": {"poison_rate": 0}}, "poison_rate"),
        ({"clean_budget": 0.9}, "clean budget"),
        ({"epochs": 0}, "at least 1 epoch"),
    ],
)
def test_bad_parameters_fail_before_any_training(kwargs, message):
    with pytest.raises(ParamError, match=message):
        prepare("badnets", "fine_pruning", **kwargs)


def test_defender_with_too_small_a_clean_budget_says_the_minimum_before_training(tmp_path):
    with pytest.raises(ParamError, match=r"at least 10 clean samples, but a clean budget of 0.005 gives 6 .* at least 0\.0079"):
        prepare("none", "fine_pruning", clean_budget=0.005, epochs=1)  # 6 samples
    assert not any(tmp_path.iterdir())  # refused before anything was trained or stored


@pytest.mark.parametrize("defender", ["anp", "clp"])
def test_a_defender_that_cannot_act_on_the_architecture_is_an_error_in_a_match_and_na_in_a_suite(store, splits, defender):
    """`arena match` asks for an applicable pair; the Python API (a suite's planner) plays it as an
    n/a cell: the published model deployed as it is; the defense itself refuses such a model."""
    from arena.models import build_model
    from arena.registry import DEFENDERS

    with pytest.raises(ParamError, match=r"needs a model that is BatchNormalized.* not applicable on the architecture 'badnets_cnn'"):
        prepare("badnets", defender, require_applicable=True)
    result = run_match(prepare("badnets", defender, clean_budget=0.1), store).to_json()
    defended = result["defended"]
    assert "BatchNormalized" in defended["not_applicable"] and defended["deployed"] == "n/a"
    assert defended["asr"] == result["attacked"]["asr"] and defended["ca"] == result["attacked"]["ca"]
    task = prepare("none", defender).task
    with pytest.raises(ParamError, match="not applicable"):
        DEFENDERS.create(defender).defend(build_model(task, torch.Generator().manual_seed(0)), task, splits.clean, torch.Generator())


def test_a_manifest_without_its_attack_record_is_refused(tmp_path):
    import json

    store = ArtifactStore(tmp_path)
    prepared = prepare("badnets", "none", epochs=1)
    run_match(prepared, store)
    path = store.manifest_path(prepared.spec.attack.key)
    manifest = json.loads(path.read_text())
    del manifest["triggers"]
    path.write_text(json.dumps(store.authenticate(manifest)))  # as arena would write it: authentic, but without triggers
    with pytest.raises(ArtifactIntegrityError, match="lacks a valid attack record"):
        run_match(prepared, store)


def test_a_data_free_defender_is_handed_no_clean_data(splits):
    """`data_free` is enforced, not taken on trust: the hook sees an empty clean split."""
    from arena.models import build_model
    from arena.protocol import DefenseOutcome
    from arena.strategy import Defender

    seen = []

    class Spy(Defender):
        name, version, paper = "spy", "1", "test"

        def run(self, model, ctx):
            seen.append(len(ctx.clean))
            return DefenseOutcome()

    task = prepare("none", "none").task
    model = build_model(task, torch.Generator().manual_seed(0))
    Spy().defend(model, task, splits.clean, torch.Generator().manual_seed(0))
    Spy.data_free = True
    Spy().defend(model, task, splits.clean, torch.Generator().manual_seed(0))
    assert seen == [len(splits.clean), 0] and len(splits.clean) > 0
