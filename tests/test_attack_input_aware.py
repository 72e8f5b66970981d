"""The input-aware dynamic backdoor (attackers/input_aware.py) on digits: the backdoor is planted
stealthily, each input gets its own trigger, a trigger made for one input does not open another,
the generated trigger survives its JSON form, and bad hyperparameters are refused before training.

One match at the defaults is played once (module fixture) and shared by the tests.
"""

import json

import pytest
import torch

from arena.artifacts import published_builder
from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.store import ArtifactStore
from arena.training import predict
from arena.triggers import GeneratedTrigger, trigger_from_dict


@pytest.fixture(scope="module")
def attacked(shared_home):
    """(match result, published model, its trigger rebuilt from the manifest, the test split)."""
    store = ArtifactStore(shared_home)
    prepared = prepare("input_aware", "none", seed=0)
    result = run_match(prepared, store).to_json()
    model, manifest = store.load(prepared.spec.attack.key, published_builder(prepared.task))
    (trigger,) = [trigger_from_dict(t) for t in manifest["triggers"]]
    return result, model, trigger, player_splits(load_dataset("digits"), 0.05).test


def _target_rate(model, x, trigger):
    return float((predict(model, x) == trigger.goal.target).float().mean())


def test_the_defaults_plant_a_stealthy_backdoor(attacked):
    """At the paper's defaults (mask density 3.2 %: about 2 pixels of an 8x8 digit, 50 epochs on
    ~1.4k images) the backdoor is planted but weaker than the paper's MNIST 99.5 %: ASR about
    0.75 on digits, so the bar here is 0.6, not 0.9."""
    result, _, trigger, _ = attacked
    assert isinstance(trigger, GeneratedTrigger)
    assert result["attacked"]["asr"] > 0.6, result["attacked"]
    assert result["stealthy"], (result["attacked"]["ca"], result["honest"]["ca"])


def test_each_input_gets_its_own_trigger(attacked):
    """The additive pattern x' − x differs between inputs: a fixed trigger (BadNets, blended)
    would give the same pattern on every background pixel and a ratio near 0."""
    _, _, trigger, test = attacked
    x = test.x[:200]
    delta = trigger.apply(x) - x
    other = delta.roll(1, 0)  # each input against a different one
    spread = float((delta - other).flatten(1).norm(dim=1).mean() / delta.flatten(1).norm(dim=1).mean())
    assert spread > 0.5, spread
    masks = trigger.mask_generator(x) > 0.5
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 10  # the mask moves with the input too


def test_a_trigger_made_for_another_input_does_not_fire(attacked):
    """The cross-trigger term: x_i + M(x_j)·(G(x_j) − x_i) lands on the target far less often than
    x_i's own trigger (the paper keeps cross-trigger accuracy high)."""
    _, model, trigger, test = attacked
    x = test.x[test.y != trigger.goal.target]
    own = _target_rate(model, trigger.apply(x), trigger)
    cross = _target_rate(model, trigger.cross(x, x.roll(1, 0)), trigger)
    assert cross < own - 0.3, (own, cross)


def test_the_generated_trigger_survives_its_json_form(attacked):
    _, _, trigger, test = attacked
    again = trigger_from_dict(json.loads(json.dumps(trigger.to_dict())))
    assert torch.equal(again.apply(test.x[:50]), trigger.apply(test.x[:50]))
    assert again.to_dict() == trigger.to_dict()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"cross_rate": 1.5}, "cross_rate"),
        ({"cross_rate": -0.1}, "cross_rate"),
        ({"poison_rate": 1.5}, "poison_rate"),
        ({"poison_rate": -0.1}, "poison_rate"),
        ({"poison_rate": 0.6, "cross_rate": 0.5}, "must not exceed 1"),
        ({"mask_density": 0.0}, "mask_density"),
        ({"mask_density": 1.5}, "mask_density"),
        ({"target": 10}, "not a label"),
    ],
)
def test_bad_hyperparameters_are_refused_before_training(params, message):
    with pytest.raises(ParamError, match=message):
        prepare("input_aware", "none", attacker_params=params)
