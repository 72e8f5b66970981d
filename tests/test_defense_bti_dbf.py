"""BTI-DBF (U) on small digits models: its decoupling mask, its bounded generator, its unlearning, its refusals.

At its defaults BTI-DBF does not remove the digits BadNets backdoor (the 3x3 patch changes 0.41
of the pixel variance, beyond the paper's bound of 0.3, and shares its features with the digit;
the class docstring and the report give the numbers), so the unlearning step is shown with the
true trigger standing in for the inverted inputs: what the defense does once its inversion is
right, and that the content of the inverted inputs, not their size, is what unlearning needs.
"""

import pytest
import torch
from arena.defenders.bti_dbf import BtiDbf, FeatureTap, InversionGenerator, benign_feature_mask
from torch import nn

from arena.artifacts import obtain_attacked
from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare
from arena.training import accuracy, predict

BUDGET = 0.1


def attacked(attacker, store):
    prepared = prepare(attacker, "bti_dbf", clean_budget=BUDGET)
    splits = player_splits(load_dataset("digits"), BUDGET)
    model, triggers, _, _ = obtain_attacked(prepared.spec.attack, prepared.attacker, prepared.task, splits, store)
    return prepared, splits, model, triggers


def test_the_benign_feature_mask_keeps_the_labels_and_its_complement_loses_them(store):
    """Step 1: on the attacked model, m ⊙ f keeps the test labels and (1 − m) ⊙ f loses them;
    the same mask values at shuffled places do neither (both halves keep most labels)."""
    prepared, splits, model, _ = attacked("badnets", store)
    test = splits.test
    generator = torch.Generator().manual_seed(0)
    with FeatureTap(model.feature_layers()[-1]) as tap:
        mask = benign_feature_mask(model, tap, splits.clean, prepared.defender.params, generator)
        shuffled = mask.flatten()[torch.randperm(mask.numel(), generator=generator)].view_as(mask)
        with torch.no_grad():
            acc = lambda m: float((tap.masked_logits(model, test.x, m).argmax(1) == test.y).float().mean())  # noqa: E731
            learned, complement, shuffled_keep, shuffled_complement = acc(mask), acc(1 - mask), acc(shuffled), acc(1 - shuffled)
    assert learned > 0.8 and complement < 0.5
    assert shuffled_complement > 0.8 and shuffled_keep > 0.8
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert not model.mask._forward_hooks  # the tap removed its hook


def test_the_generator_starts_near_the_identity_and_never_leaves_its_bound():
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    std = x.std(dim=(0, 2, 3))
    gen = InversionGenerator(1, 16, 0.3, std, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(gen.distances(gen(x) - x).max()) < 0.01
        gen.output.weight.mul_(1000)  # a generator pushing far: each image is pulled back to the bound
        out = gen(x)
    distances = gen.distances(out - x)
    assert float(distances.max()) <= 0.3 + 1e-5 and float(distances.min()) > 0.29
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_unlearning_removes_a_correctly_inverted_backdoor_where_noise_of_its_size_does_not(store):
    """Step 3 at the default budgets, the true trigger standing in for G(x): the backdoor goes
    and clean accuracy stays within 3 points of the honest model's; unlearning the same count of
    inputs moved as far towards uniform noise leaves most of the backdoor in place."""
    prepared, splits, model, triggers = attacked("badnets", store)
    _, _, honest, _ = attacked("none", store)
    trigger, test = triggers[0], splits.test
    asr = lambda m: float((predict(m, trigger.apply(test.x[test.y != 0])) == 0).float().mean())  # noqa: E731

    class TrueTrigger(BtiDbf):
        def inverted(self, gen, x, generator):
            return trigger.apply(x)

    class NoiseOfTheSameSize(BtiDbf):
        def inverted(self, gen, x, generator):
            size = (trigger.apply(x) - x).pow(2).flatten(1).mean(1)
            noise = torch.rand(tuple(x.shape), generator=generator).to(x.device)
            scale = (size / (noise - x).pow(2).flatten(1).mean(1).clamp(min=1e-12)).sqrt().clamp(max=1.0)
            return x + scale.view(-1, 1, 1, 1) * (noise - x)

    assert asr(model) > 0.9
    repaired = TrueTrigger().defend(model, prepared.task, splits.clean, torch.Generator().manual_seed(0))
    assert repaired.verdict is None and repaired.input_filter is None
    assert asr(repaired.model) < 0.1
    assert accuracy(repaired.model, test) > accuracy(honest, test) - 0.03
    noisy = NoiseOfTheSameSize().defend(model, prepared.task, splits.clean, torch.Generator().manual_seed(0))
    assert asr(noisy.model) > 0.5


@pytest.mark.parametrize("params", [{"norm_bound": 0}, {"rounds": 0}, {"unlearn_share": 1.5}, {"generator_steps": 0}, {"lr": -1e-3}, {"mask_lr": "fast"}])
def test_bad_hyperparameters_are_refused_before_any_work(params):
    with pytest.raises(ParamError):
        prepare("badnets", "bti_dbf", defender_params=params)


def test_a_model_without_feature_layers_is_not_applicable(splits):
    prepared = prepare("none", "bti_dbf")
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ParamError, match="HasFeatureLayers"):
        BtiDbf().defend(flat, prepared.task, splits.clean, torch.Generator().manual_seed(0))
