import torch

from arena.data import load_dataset, player_splits
from arena.match import prepare
from arena.pruning import mean_channel_activation, prune_by_activation, pruned_channels
from arena.training import accuracy, predict

SPLITS = player_splits(load_dataset("digits"), 0.05)


def _attack(name, **params):
    prepared = prepare(name, "none", attacker_params=params)
    return prepared.attacker.attack(prepared.task, SPLITS.attacker, torch.Generator().manual_seed(0))


def test_pruning_stops_before_the_accuracy_drop_threshold():
    model = _attack("none").model
    clean = SPLITS.clean
    base = accuracy(model, clean)
    removed = prune_by_activation(model, clean, max_accuracy_drop=0.05)
    assert removed and pruned_channels(model) == sorted(removed)
    assert accuracy(model, clean) >= base - 0.05
    # removed in increasing order of clean activation
    assert len(removed) < model.mask.mask.numel()


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
