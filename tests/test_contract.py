"""One contract, every registered strategy: metadata, space, pickling, determinism, output checks."""

import pickle

import pytest
import torch

from arena.data import load_dataset, player_splits
from arena.match import task_for
from arena.protocol import AttackOutput, DefenseOutcome
from arena.registry import ATTACKERS, DEFENDERS

TASK = task_for("digits", "badnets_cnn", epochs=2)
SPLITS = player_splits(load_dataset("digits"), 0.05)


def _metadata_ok(cls):
    assert cls.version and cls.paper and cls.deviations
    assert cls.summary(), f"{cls.name} needs a one-line docstring"
    instance = cls()
    assert instance.params == cls.space.defaults()
    assert set(cls.space.tune_space()) == set(cls.space)
    clone = pickle.loads(pickle.dumps(instance))  # Ray ships strategies to workers
    assert clone.params == instance.params


@pytest.mark.parametrize("name", ATTACKERS.names())
def test_attacker_contract(name):
    cls = ATTACKERS.get(name)
    _metadata_ok(cls)
    outs = [cls().attack(TASK, SPLITS.attacker, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert all(isinstance(o, AttackOutput) for o in outs)
    a, b = (o.model.state_dict() for o in outs)
    assert all(torch.equal(a[k], b[k]) for k in a), "not deterministic under a seed"
    assert [t.to_dict() for t in outs[0].triggers] == [t.to_dict() for t in outs[1].triggers]


@pytest.fixture(scope="module")
def victim():
    return ATTACKERS.get("badnets")().attack(TASK, SPLITS.attacker, torch.Generator().manual_seed(3)).model


@pytest.mark.parametrize("name", DEFENDERS.names())
def test_defender_contract(name, victim):
    cls = DEFENDERS.get(name)
    _metadata_ok(cls)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    outs = [cls().defend(victim, TASK, SPLITS.clean, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items()), "mutated the model it was given"
    assert all(isinstance(o, DefenseOutcome) for o in outs)
    if outs[0].model is not None:
        a, b = (o.model.state_dict() for o in outs)
        assert all(torch.equal(a[k], b[k]) for k in a), "not deterministic under a seed"
    assert outs[0].verdict == outs[1].verdict
