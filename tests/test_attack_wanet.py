"""WaNet on digits: the warp is a small change spread over the whole image, the backdoor works,
noise mode makes it fire on the exact warp only, and bad warps are refused before training."""

import pytest
import torch

from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.protocol import AllToOne
from arena.registry import ATTACKERS
from arena.triggers import PatchTrigger, WarpTrigger, trigger_from_dict

# The paper's defaults (k = 4, s = 0.5, rho_a = 0.1, cross ratio 2) plant no backdoor in 8x8 digits
# (ASR 0.11, with noise mode on: the noisy warps the network must ignore move pixels as far as the
# warp does); three times the poison and twice the strength do (ASR 0.96).
DIGITS = {"strength": 1.0, "poison_rate": 0.3}


def play(store, params):
    return run_match(prepare("wanet", "none", attacker_params=params, seed=0), store).to_json()


def published_model(store, params):
    from arena.artifacts import published_builder

    play(store, params)
    prepared = prepare("wanet", "none", attacker_params=params, seed=0)
    return store.load(prepared.spec.attack.key, published_builder(prepared.task))[0]


def test_the_warp_is_a_small_change_spread_over_the_whole_image_not_a_patch():
    task = prepare("wanet", "none").task
    (warp,) = ATTACKERS.create("wanet").triggers(task)
    x = player_splits(load_dataset("digits"), 0.05).test.x
    change = (warp.apply(x) - x).abs()
    moved = change.amax(dim=0)[0] > 1 / 255  # (8, 8): pixels some image changes by a grey level
    assert all(bool(q.any()) for q in (moved[:4, :4], moved[:4, 4:], moved[4:, :4], moved[4:, 4:])), moved
    assert int(moved.sum()) >= 32, moved  # at least half the image; a 3x3 patch writes 9 pixels
    patch = PatchTrigger(AllToOne(0), 3, margin=1)
    assert int((patch.apply(x) != x).any(dim=0).sum()) <= 9
    # a sub-pixel move: on average a few grey levels, at most the bilinear bound, never a full flip
    assert float(change.mean()) < 0.1
    assert float(change.max()) <= warp.largest_shift(task.input_shape) + 1e-5
    assert float(change.max()) < 0.5 < float((patch.apply(x) - x).abs().max())


def test_the_warp_is_deterministic_and_survives_its_json_form():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    warp = WarpTrigger(AllToOne(3), 4, 0.5, seed=7)
    noisy = WarpTrigger(AllToOne(3), 4, 0.5, seed=7, noise_seed=8, name="noisy")
    for t in (warp, noisy):
        again = trigger_from_dict(t.to_dict())
        torch.testing.assert_close(again.apply(x), t.apply(x), rtol=0, atol=0)
        torch.testing.assert_close(t.apply(x), t.apply(x), rtol=0, atol=0)
    # noise mode gives each input its own grid: the same image, six different results
    same = x[:1].expand(6, 1, 8, 8)
    assert len({tuple(row.tolist()) for row in noisy.apply(same).flatten(1)}) == 6
    assert len({tuple(row.tolist()) for row in warp.apply(same).flatten(1)}) == 1
    assert not torch.equal(WarpTrigger(AllToOne(3), 4, 0.5, seed=8).apply(x), warp.apply(x))


def test_the_poison_sets_are_the_warp_relabelled_and_the_noisy_warp_with_true_labels():
    task = prepare("wanet", "none").task
    attack = ATTACKERS.create("wanet")
    poison, noise = attack.poison_sets(task)
    assert poison.relabel and poison.rate == 0.1 and poison.trigger.to_dict() == attack.triggers(task)[0].to_dict()
    assert not noise.relabel and noise.rate == 0.2 and noise.trigger.noise_seed is not None and noise.trigger.seed == poison.trigger.seed
    assert len(ATTACKERS.create("wanet", {"noise_rate": 0.0}).poison_sets(task)) == 1


def test_wanet_plants_a_working_stealthy_backdoor(store):
    result = play(store, DIGITS)
    assert result["attacked"]["asr"] > 0.9 and result["stealthy"], (result["attacked"], result["honest"]["ca"])


def test_noise_mode_makes_the_backdoor_fire_on_the_exact_warp_only(store):
    """Nguyen & Tran's point: without the noisy copies the network learns "warped", and a warp
    with another grid fires too."""
    from arena.match import evaluate

    task = prepare("wanet", "none").task
    test = player_splits(load_dataset("digits"), 0.05).test
    p = ATTACKERS.create("wanet", DIGITS).params
    others = [WarpTrigger(AllToOne(0), p["grid_size"], p["strength"], p["warp_seed"], noise_seed=99, name="noisy_grid")]
    others += [WarpTrigger(AllToOne(0), p["grid_size"], p["strength"], seed, name=f"seed_{seed}") for seed in (11, 12, 13)]
    rates = {}
    for noise_rate in (0.2, 0.0):
        model = published_model(store, {**DIGITS, "noise_rate": noise_rate})
        rates[noise_rate] = evaluate(model, [*ATTACKERS.create("wanet", DIGITS).triggers(task), *others], test).asr_per_trigger
    with_noise, without = rates[0.2], rates[0.0]
    assert with_noise["warp"] > 0.9 and without["warp"] > 0.9, rates
    # without noise mode a perturbed grid is as good as the warp; with it, far less
    assert without["noisy_grid"] > 0.9 and with_noise["noisy_grid"] < without["noisy_grid"] - 0.2, rates
    other_seeds = [f"seed_{s}" for s in (11, 12, 13)]
    assert sum(with_noise[s] for s in other_seeds) < sum(without[s] for s in other_seeds), rates


@pytest.mark.parametrize(
    "params, message",
    [
        ({"strength": 0.0}, "a warping strength that leaves the image unchanged"),
        ({"strength": 1e-4}, "a warping strength that leaves the image unchanged"),
        ({"grid_size": 9}, "finer than the 8x8 image"),
        ({"target": 10}, "not a label"),
        ({"grid_size": 1}, "'grid_size'"),
        ({"strength": -0.5}, "'strength'"),
        ({"noise_rate": 1.5}, "'noise_rate'"),
    ],
)
def test_bad_warps_are_refused_before_training(monkeypatch, params, message):
    import arena.attacks

    with pytest.raises(ParamError, match=message):
        prepare("wanet", "none", attacker_params=params)
    if message.startswith("'"):
        return  # refused by the space itself, before an attacker exists
    # the attack itself refuses them too, before any training
    monkeypatch.setattr(arena.attacks, "fit", lambda *a, **k: pytest.fail("trained before refusing"))
    task = prepare("wanet", "none").task
    data = player_splits(load_dataset("digits"), 0.05).attacker
    with pytest.raises(ParamError, match=message):
        ATTACKERS.create("wanet", params).attack(task, data, torch.Generator().manual_seed(0))
