"""The information boundary of docs/design.md §1: what a defender's hook can and cannot reach."""

import dataclasses

import pytest
import torch
from torch import nn

from arena.data import load_dataset, player_splits
from arena.match import prepare, run_match
from arena.protocol import DefenseOutcome, Goal, Trigger
from arena.registry import DEFENDERS
from arena.store import ArtifactStore
from arena.strategy import Defender, DefenseContext


class Spy(Defender):
    """Records what it is given, and tries to damage the model it holds."""

    name = "spy"
    version = "1"
    paper = "test double"
    seen: dict = {}

    def run(self, model, ctx):
        Spy.seen = {"model": model, "ctx": ctx}
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return DefenseOutcome()


def _reachable(root, depth=6):
    """Every object reachable from root through attributes, containers and dataclass fields."""
    seen, stack, out = set(), [(root, 0)], []
    while stack:
        obj, d = stack.pop()
        if id(obj) in seen or d > depth:
            continue
        seen.add(id(obj))
        out.append(obj)
        children = []
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            children = list(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        elif isinstance(obj, nn.Module):
            children = list(vars(obj).values())
        stack.extend((c, d + 1) for c in children)
    return out


@pytest.fixture
def spied(monkeypatch, shared_home):
    monkeypatch.setitem(DEFENDERS._builtins, "spy", Spy)
    result = run_match(prepare("badnets", "spy"), ArtifactStore(shared_home))
    return result, Spy.seen


def test_the_hook_gets_only_task_clean_split_generator_and_model(spied):
    _, seen = spied
    ctx = seen["ctx"]
    assert isinstance(ctx, DefenseContext)
    assert {f.name for f in dataclasses.fields(ctx)} == {"task", "clean", "generator", "progress"}
    assert {f.name for f in dataclasses.fields(ctx.task)} == {"dataset", "num_classes", "input_shape", "architecture", "epochs"}


def test_no_trigger_goal_or_test_data_is_reachable_from_what_the_hook_holds(spied):
    _, seen = spied
    test_x = player_splits(load_dataset("digits"), 0.05).test.x
    for obj in _reachable(seen["ctx"]) + _reachable(seen["model"]):
        assert not isinstance(obj, (Trigger, Goal)), obj
        if isinstance(obj, torch.Tensor) and obj.numel():
            assert obj.untyped_storage().data_ptr() != test_x.untyped_storage().data_ptr()


def test_the_clean_split_is_clean_and_disjoint_from_the_test_split(spied):
    result, seen = spied
    clean = seen["ctx"].clean
    dataset = load_dataset("digits")
    assert len(clean) == result.clean_samples
    flat_train = dataset.train.x.flatten(1)
    for x, y in zip(clean.x.flatten(1), clean.y):
        same = torch.nonzero((flat_train == x).all(dim=1)).flatten()
        assert len(same) and bool((dataset.train.y[same] == y).any())  # an untouched training sample
    flat_test = dataset.test.x.flatten(1)
    assert not any(bool((flat_test == x).all(dim=1).any()) for x in clean.x.flatten(1))


def test_the_hook_cannot_damage_the_evaluators_model(spied):
    result, seen = spied
    # the spy zeroed its copy; the evaluator scored the untouched published model
    assert all(float(p.detach().abs().sum()) == 0 for p in seen["model"].parameters())
    assert result.defended.ca == result.attacked.ca > 0.9
