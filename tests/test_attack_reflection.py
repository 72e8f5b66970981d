"""The reflection backdoor (Refool) on digits: the trigger is a whole-image reflection that differs
between inputs, the poisoning is clean-label, the poisoning and the reflection selection are what
make the backdoor, and bad hyperparameters are refused before any training."""

import pytest
import torch

from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.protocol import AllToOne
from arena.registry import ATTACKERS
from arena.training import predict
from arena.triggers import ReflectionTrigger, trigger_from_dict


def play(store, attacker, params=None, seed=0):
    return run_match(prepare(attacker, "none", attacker_params=params or {}, seed=seed), store).to_json()


def target_rate(model, trigger, test):
    """Share of the test inputs outside the target label that the trigger sends to the target."""
    others = test.x[test.y != trigger.goal.target]
    return float((predict(model, trigger.apply(others)) == trigger.goal.target).float().mean())


@pytest.mark.parametrize("reflection_model", ["out_of_focus", "in_focus", "ghost"])
def test_a_reflection_covers_most_of_the_image_differs_between_inputs_and_is_reproducible(splits, reflection_model):
    images = splits.attacker.x
    trigger = ReflectionTrigger(AllToOne(0), images[:20], reflection_model=reflection_model, alpha=0.5, seed=7)
    x = images[100:300]
    out = trigger.apply(x)
    assert torch.equal(out, trigger.apply(x)) and torch.equal(x, images[100:300])  # deterministic, input untouched
    assert out.min() >= 0 and out.max() <= 1
    # not a patch: a reflection lays another image over the whole frame (a sharp one changes
    # its strokes' pixels, a blurred one nearly every pixel), and where it lands varies
    changed = out != x
    share = float(changed.float().mean())
    assert share > (0.8 if reflection_model == "out_of_focus" else 0.3), share
    assert float(changed.any(dim=0).float().mean()) > 0.75  # (digits leave their outer columns almost always dark)
    # each input gets one of the reflections, and not all the same one: on dark images the
    # result is the reflection layer itself
    layers = trigger.apply(torch.zeros_like(x))
    assert len({tuple(layer.flatten().tolist()) for layer in layers}) > 10
    rebuilt = trigger_from_dict(trigger.to_dict())
    assert isinstance(rebuilt, ReflectionTrigger) and torch.equal(rebuilt.apply(x), out)


def test_the_reflection_models_differ():
    reflection = torch.zeros(1, 1, 8, 8)
    reflection[0, 0, 3, 3] = 1.0
    dark = torch.zeros(1, 1, 8, 8)
    sharp, blurred, ghost = (ReflectionTrigger(AllToOne(0), reflection, reflection_model=m, alpha=1.0).apply(dark)[0, 0] for m in ("in_focus", "out_of_focus", "ghost"))
    assert torch.equal(sharp, reflection[0, 0])
    assert float(blurred[3, 3]) < 0.5 and float(blurred[2, 3]) > 0 and abs(float(blurred.sum()) - 1.0) < 1e-4  # spread, energy kept
    assert float(ghost[3, 3]) == 1.0 and float(ghost[4, 4]) == 0.5 and int((ghost > 0).sum()) == 2  # a second, fainter copy


def test_defaults_plant_a_stealthy_backdoor_the_honest_model_does_not_have(store):
    """At the defaults the clean-label reflection backdoor is real but partial on digits (ASR
    about 0.46, against 0 for the honest model on the same reflected inputs): the target class's
    own digit features explain its label, so the reflection is only part of what is learnt."""
    from arena.artifacts import published_builder

    result = play(store, "reflection")
    assert result["stealthy"], (result["attacked"]["ca"], result["honest"]["ca"])
    play(store, "none")
    honest = prepare("none", "none")
    model, _ = store.load(honest.spec.attack.key, published_builder(honest.task))
    manifest = store.read_manifest(prepare("reflection", "none").spec.attack.key)
    (trigger,) = [trigger_from_dict(t) for t in manifest["triggers"]]
    assert isinstance(trigger, ReflectionTrigger) and len(trigger.reflections) == 20
    test = player_splits(load_dataset("digits"), 0.05).test
    honest_rate = target_rate(model, trigger, test)
    assert result["attacked"]["asr"] > honest_rate + 0.3, (result["attacked"]["asr"], honest_rate)


def test_clean_label_never_changes_a_label_and_needs_its_reflection_selection(splits, monkeypatch):
    import arena.attackers.reflection as module

    task = prepare("reflection", "none").task
    seen = []
    original = module.train_from_scratch
    monkeypatch.setattr(module, "train_from_scratch", lambda ctx, data, p, **kw: (seen.append((ctx.data, data)), original(ctx, data, p, **kw))[1])
    rates: dict[str, list[float]] = {"selected": [], "random": []}
    for seed in (0, 1):  # the clean-label backdoor varies much from one run to the next: two runs each
        for kind, params in (("selected", {}), ("random", {"selection_rounds": 0})):
            out = ATTACKERS.create("reflection", params).attack(task, splits.attacker, torch.Generator().manual_seed(seed))
            rates[kind].append(target_rate(out.model, out.triggers[0], splits.test))
    assert len(seen) == 6  # per seed: the selection's surrogate, then each attack's published model
    for given, trained_on in seen:
        assert torch.equal(given.y, trained_on.y)  # labels untouched, nothing added
        changed = (given.x != trained_on.x).flatten(1).any(dim=1)
        assert set(given.y[changed].tolist()) == {0}  # only target-class images were altered
        assert int(changed.sum()) == round(0.5 * int((given.y == 0).sum()))  # poison_rate of the target class
    # Refool's selection keeps the reflections a surrogate learnt best; random ones fire far less
    assert sum(rates["selected"]) / 2 > sum(rates["random"]) / 2 + 0.1, rates


@pytest.mark.parametrize(
    "params, message",
    [
        ({"poison_rate": 0.0}, "poison_rate"),
        ({"poison_rate": 1.5}, "poison_rate"),
        ({"sigma": -0.5}, "sigma"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.2}, "alpha"),
        ({"num_reflections": 0}, "num_reflections"),
        ({"num_reflections": 50, "num_candidates": 20}, "num_candidates"),
        ({"reflection_model": "mirror"}, "reflection_model"),
        ({"ghost_offset": 8}, "Ghost offset"),
        ({"target": 10}, "not a label"),
    ],
)
def test_bad_reflection_hyperparameters_fail_before_training(params, message):
    with pytest.raises(ParamError, match=message):
        prepare("reflection", "none", attacker_params=params)
