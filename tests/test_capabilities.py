"""Capabilities: what a strategy needs of a model, checked by member lookup before anything runs."""

import pytest
import torch
from torch import nn

from arena.capabilities import HasHiddenLayer, Prunable, missing_capabilities
from arena.errors import ParamError
from arena.match import prepare
from arena.models import build_model
from arena.protocol import TaskSpec

TASK = TaskSpec("digits", 10, (1, 8, 8), "badnets_cnn", 1)


class Flat(nn.Module):
    """No conv layer, no named hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_the_task_architecture_has_the_layers_its_strategies_use():
    # fc1, fc2 and the channel mask are submodules, found through nn.Module.__getattr__ only
    assert missing_capabilities(build_model(TASK), (Prunable, HasHiddenLayer)) == []


def test_a_model_without_them_lacks_them():
    assert missing_capabilities(Flat(), (Prunable, HasHiddenLayer)) == ["Prunable", "HasHiddenLayer"]


def test_a_wrapper_is_prunable_exactly_when_its_host_is():
    from arena.attackers.trojannet import WithTrojanNet

    assert missing_capabilities(WithTrojanNet(build_model(TASK), TASK), (Prunable,)) == []
    assert missing_capabilities(WithTrojanNet(Flat(), TASK), (Prunable,)) == ["Prunable"]


@pytest.mark.parametrize("defender", ["pruning", "abs"])
def test_a_defense_handed_a_model_it_cannot_act_on_says_so(defender):
    from arena.data import load_dataset, player_splits
    from arena.registry import DEFENDERS

    clean = player_splits(load_dataset("digits"), 0.05).clean
    with pytest.raises(ParamError, match=f"{defender}.*Prunable.*not applicable"):
        DEFENDERS.create(defender).defend(Flat(), TASK, clean, torch.Generator().manual_seed(0))


def test_neural_cleanse_needs_a_prunable_model_only_for_its_pruning_mitigation():
    from arena.registry import DEFENDERS

    assert DEFENDERS.create("neural_cleanse").required_capabilities() == ()
    assert DEFENDERS.create("neural_cleanse", {"mitigation": "pruning"}).required_capabilities() == (Prunable,)


def test_arena_match_refuses_an_attacker_its_architecture_cannot_carry(monkeypatch):
    from arena.models import ARCHITECTURES, Architecture

    monkeypatch.setitem(ARCHITECTURES._builtins, "flat", Architecture("flat", build=lambda task: Flat()))
    with pytest.raises(ParamError, match="pruning_aware.*Prunable.*'flat' cannot carry"):
        prepare("pruning_aware", "none", architecture="flat")
    prepare("badnets", "none", architecture="flat")  # an attack that needs nothing of the model is fine
