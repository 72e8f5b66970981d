import copy
import functools

import torch

from arena.data import load_dataset, player_splits
from arena.match import prepare
from arena.pruning import mean_channel_activation, prune_by_activation, pruned_channels, set_pruned
from arena.training import accuracy, predict

SPLITS = player_splits(load_dataset("digits"), 0.05)


@functools.cache
def _trained(name):
    prepared = prepare(name, "none")
    return prepared.attacker.attack(prepared.task, SPLITS.attacker, torch.Generator().manual_seed(0))


def _attack(name):
    """The attack's output (seed 0), as a copy the test may change."""
    return copy.deepcopy(_trained(name))


def _asr(out, model=None):
    test, trigger = SPLITS.test, out.triggers[0]
    others = test.x[test.y != trigger.goal.target]
    return float((predict(model or out.model, trigger.apply(others)) == trigger.goal.target).float().mean())


def test_pruning_removes_the_least_active_channels_first_and_stops_at_the_threshold():
    model = _attack("none").model
    clean = SPLITS.clean
    base = accuracy(model, clean)
    activation = mean_channel_activation(model, clean.x)
    removed = prune_by_activation(model, clean, max_accuracy_drop=0.05)
    assert removed and pruned_channels(model) == sorted(removed)
    assert accuracy(model, clean) >= base - 0.05
    # removed in increasing order of clean activation, and no kept channel is less active than a removed one
    order = activation[removed]
    assert torch.all(order[1:] >= order[:-1]), order
    kept = [c for c in range(activation.numel()) if c not in removed]
    assert float(activation[kept].min()) >= float(order.max())
    # it stopped because the next channel in that order would have cost more than the threshold
    following = min(kept, key=lambda c: (float(activation[c]), c))
    set_pruned(model, [following])
    assert accuracy(model, clean) < base - 0.05


def test_pruning_lowers_a_badnets_backdoor_only_at_a_large_accuracy_cost():
    """On 8x8 digits the BadNets backdoor shares the channels that clean inputs use: at the
    Fine-Pruning paper's 4% threshold it survives whole, and pruning cuts it only once the
    defender accepts a 30-point drop of clean-split accuracy (on this seed-0 model)."""
    out = _attack("badnets")
    assert _asr(out) > 0.95
    at_paper = _attack("badnets").model
    prune_by_activation(at_paper, SPLITS.clean, max_accuracy_drop=0.04)
    assert _asr(out, at_paper) > 0.9
    deep = _attack("badnets").model
    removed = prune_by_activation(deep, SPLITS.clean, max_accuracy_drop=0.3)
    assert _asr(out, deep) < 0.5
    assert len(removed) > len(pruned_channels(at_paper))


def test_pruning_aware_attack_plants_dormant_decoys_that_pruning_removes_for_free():
    out = _attack("pruning_aware")
    model = out.model
    activation = mean_channel_activation(model, SPLITS.attacker.x)
    decoys = torch.nonzero(activation == 0).flatten().tolist()
    assert len(decoys) >= 4, "the attack restores its pruned channels silenced"
    before = predict(model, SPLITS.test.x)
    triggered_before = predict(model, out.triggers[0].apply(SPLITS.test.x))
    with torch.no_grad():
        model.mask.mask[decoys] = 0
    # removing the decoys changes nothing, on clean or triggered inputs: the backdoor lives elsewhere
    assert torch.equal(predict(model, SPLITS.test.x), before)
    assert torch.equal(predict(model, out.triggers[0].apply(SPLITS.test.x)), triggered_before)
