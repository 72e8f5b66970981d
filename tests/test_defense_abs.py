"""ABS on small digits models: it spares honest models; its stimulation analysis points the trigger
search at the neurons whose triggers work; it does not flag the digits BadNets model (a known limit)."""

import pytest
import torch
from arena.defenders.abs import ABS, reasr

from arena.artifacts import obtain_attacked
from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.match import prepare, run_match
from arena.protocol import TaskSpec
from arena.strategy import DefenseContext

# The 10% clean budget of the Neural Cleanse and DeepInspect tests, so the attacked models are shared.
BUDGET = 0.1
# A BadNets patch within ABS's default trigger bound (6% of the pixels, about 4 of an 8x8 image):
# 2x2 rather than the default 3x3, which covers 14% of the image.
WITHIN_BOUND = {"trigger_size": 2}


def test_abs_does_not_flag_an_honest_model(store):
    result = run_match(prepare("none", "abs", clean_budget=BUDGET), store).to_json()
    verdict = result["defended"]["verdict"]
    assert verdict["flagged"] is False and verdict["labels"] == [] and 0.0 <= verdict["score"] < 0.3
    assert result["defended"]["deployed"] == "published" and result["defended"]["ca"] == result["attacked"]["ca"]  # a detector: the model is left as it is


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known limit, measured: on the digits BadNets model (3x3 patch, 14% of the image, beyond the 6% bound; its backdoor spread "
        "thin over the last conv layer) the best REASR at the defaults is 0.07, under the 0.8 threshold; a strict xfail, so a "
        "change that makes ABS flag it shows up here"
    ),
)
def test_abs_flags_the_digits_badnets_model_with_its_target(store):
    result = run_match(prepare("badnets", "abs", clean_budget=BUDGET), store).to_json()
    assert result["attacked"]["asr"] > 0.9
    verdict = result["defended"]["verdict"]
    assert verdict["flagged"] and verdict["labels"] == [0]


def test_the_stimulation_analysis_finds_the_neurons_whose_reversed_triggers_work(store):
    """The moving part: reverse-engineering triggers from the top-k neurons of the stimulation
    analysis beats doing it, with the same budget, from k channels drawn at random, each of those
    credited with its best label (so only the choice of neuron is compared). On the BadNets model
    with a patch inside the bound (seed 0, generator seeded 0) the top 3 all elevate the target
    label 0 and one of their triggers sends 46% of the other labels' clean inputs to it; the three
    random draws reach 4%, 11% and 12%."""
    prepared = prepare("badnets", "abs", attacker_params=WITHIN_BOUND, clean_budget=BUDGET)
    splits = player_splits(load_dataset("digits"), BUDGET)
    model, _, _, _ = obtain_attacked(prepared.spec.attack, prepared.attacker, prepared.task, splits, store)
    model.eval()
    k, draws = 3, 3
    defender = ABS(top_k=k)
    generator = torch.Generator().manual_seed(0)
    seeds = defender.seeds(DefenseContext(prepared.task, splits.clean, generator))
    chosen = defender.candidates(model, seeds)
    assert len(chosen) == k and all(neuron.label == 0 for neuron in chosen)
    top = max(defender.reverse(model, seeds, splits.clean, neuron.channel, neuron.label, generator).reasr for neuron in chosen)

    channels = model.last_conv.out_channels
    random_best = []
    for _ in range(draws):
        picked = torch.randperm(channels, generator=generator)[:k].tolist()
        triggers = [defender.reverse(model, seeds, splits.clean, channel, 0, generator) for channel in picked]
        random_best.append(max(reasr(model, t.mask, t.pattern, label, splits.clean) for t in triggers for label in range(prepared.task.num_classes)))
    assert top > 0.3
    assert top > sum(random_best) / draws + 0.2


@pytest.mark.parametrize(
    "params",
    [
        {"top_k": 0},
        {"mask_bound": 0},
        {"mask_bound": 1.5},
        {"mask_bound": 0.01},  # below one pixel of an 8x8 image: refused by check_task
        {"seeds_per_label": 0},
        {"stimulation_steps": 1},
        {"threshold": 1.2},
    ],
)
def test_bad_hyperparameters_are_refused_before_any_work(params):
    with pytest.raises(ParamError):
        prepare("badnets", "abs", defender_params=params)


def test_a_model_bound_above_one_pixel_is_accepted_on_larger_images():
    ABS(mask_bound=0.01).check_task(TaskSpec("fashion_mnist", 10, (1, 28, 28), "badnets_cnn", 1))  # 7.8 pixels


# A model without a Prunable last conv layer is refused as n/a: tests/test_capabilities.py.
