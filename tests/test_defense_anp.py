"""ANP (Adversarial Neuron Pruning) on small digits PreAct-ResNets: what its masks find, what its
perturbation adds, and where it does not apply.

Measured here (digits, preact_resnet, seed 0, 126 clean samples, masks learned once with the
default 300 iterations, generator seeded 0): BadNets' backdoor neurons are among the lowest masks,
but the paper's fixed mask threshold (0.2, the default) prunes about ten of the 240 neurons and
leaves the backdoor whole (xfail below); pruning in mask order to a 5-point clean-split accuracy
drop (`prune_by: accuracy`) removes most of it, where as many neurons pruned at random do not.
"""

import copy

import pytest
import torch
from arena.defenders.anp import AdversarialNeuronPruning, bn_neurons, choose_pruned, optimise_masks

from arena.artifacts import obtain_attacked
from arena.data import load_dataset, player_splits
from arena.errors import ParamError
from arena.evaluator import evaluate
from arena.match import prepare, run_match
from arena.protocol import Split

ARCHITECTURE = "preact_resnet"
BUDGET = 0.1
BY_ACCURACY = {"prune_by": "accuracy"}


def _attacked(attacker, store):
    prepared = prepare(attacker, "anp", clean_budget=BUDGET, architecture=ARCHITECTURE)
    splits = player_splits(load_dataset("digits"), BUDGET)
    model, triggers, _, _ = obtain_attacked(prepared.spec.attack, prepared.attacker, prepared.task, splits, store)
    return prepared, splits, model.eval(), triggers


@pytest.fixture(scope="module")
def badnets(store):
    return _attacked("badnets", store)


@pytest.fixture(scope="module")
def honest_ca(store):
    _, splits, model, _ = _attacked("none", store)
    return evaluate(model, [], splits.test).ca


@pytest.fixture(scope="module")
def learned(badnets):
    """ANP's masks on the BadNets model at the default hyperparameters (the pruning level does not
    enter the optimisation), learned once for the tests below."""
    _, splits, model, _ = badnets
    params = AdversarialNeuronPruning().params
    return optimise_masks(copy.deepcopy(model), splits.clean, params, torch.Generator().manual_seed(0))


def _pruned(model, masks, clean, **params):
    pruned = copy.deepcopy(model)
    chosen = choose_pruned(pruned, masks, clean, AdversarialNeuronPruning(**params).params)
    return pruned, chosen


def _randomly_pruned(model, count, seed):
    """`count` BN neurons pruned as ANP prunes (weight set to 0), drawn from a generator of the test's own."""
    pruned = copy.deepcopy(model)
    neurons = [(bn, c) for bn in bn_neurons(pruned) for c in range(bn.num_features)]
    with torch.no_grad():
        for i in torch.randperm(len(neurons), generator=torch.Generator().manual_seed(seed))[:count].tolist():
            bn, c = neurons[i]
            bn.weight[c] = 0.0
    return pruned


def test_anp_masks_rank_the_backdoor_neurons_first(badnets, learned, honest_ca):
    """Pruned in mask order to a 5-point clean-split accuracy drop, ANP removes most of the backdoor
    (measured: ASR 1.0 -> 0.34, CA 0.98 -> 0.92, 32 neurons). As many neurons pruned at random
    leave more of it at a larger accuracy cost (measured over ten draws: mean ASR 0.63, mean CA
    0.83; single draws range from 0.05 to 1.0, so the mean is compared)."""
    _, splits, model, triggers = badnets
    before = evaluate(model, triggers, splits.test)
    pruned, chosen = _pruned(model, learned, splits.clean, **BY_ACCURACY)
    after = evaluate(pruned, triggers, splits.test)
    assert before.asr > 0.9
    assert after.asr < 0.5
    assert after.ca > honest_ca - 0.08
    at_random = [evaluate(_randomly_pruned(model, len(chosen), seed), triggers, splits.test) for seed in range(10)]
    assert sum(e.asr for e in at_random) / 10 > after.asr + 0.2
    assert sum(e.ca - e.asr for e in at_random) / 10 < after.ca - after.asr - 0.2


def test_anp_without_perturbation_leaves_the_backdoor(badnets, learned):
    """ε = 0: the masks learn from the clean loss alone and their order says little (measured:
    5 neurons pruned before the accuracy limit, ASR 0.96)."""
    _, splits, model, triggers = badnets
    params = {**AdversarialNeuronPruning(**BY_ACCURACY).params, "eps": 0.0}
    masks = optimise_masks(copy.deepcopy(model), splits.clean, params, torch.Generator().manual_seed(0))
    unperturbed, _ = _pruned(model, masks, splits.clean, **BY_ACCURACY, eps=0.0)
    perturbed, _ = _pruned(model, learned, splits.clean, **BY_ACCURACY)
    unperturbed_asr, perturbed_asr = evaluate(unperturbed, triggers, splits.test).asr, evaluate(perturbed, triggers, splits.test).asr
    assert unperturbed_asr > 0.8
    assert unperturbed_asr > perturbed_asr + 0.3


@pytest.mark.xfail(strict=True, reason="the paper's fixed threshold 0.2 prunes ~11 of 240 neurons here and leaves the backdoor (measured ASR 0.99)")
def test_anp_at_the_papers_mask_threshold_removes_the_backdoor(badnets, learned):
    _, splits, model, triggers = badnets
    pruned, _ = _pruned(model, learned, splits.clean)
    assert evaluate(pruned, triggers, splits.test).asr < 0.5


def test_anp_keeps_an_honest_models_accuracy(store):
    result = run_match(prepare("none", "anp", clean_budget=BUDGET, architecture=ARCHITECTURE), store).to_json()
    assert result["defended"]["not_applicable"] is None and result["defended"]["deployed"] == "repaired"
    assert result["defended"]["ca"] > result["honest"]["ca"] - 0.02


# On a model without batch normalisation the pair is n/a: tests/test_match.py.


@pytest.mark.parametrize("params", [{"eps": -0.1}, {"alpha": 1.5}, {"alpha": -0.1}, {"pgd_steps": 0}, {"threshold": 1.2}, {"prune_by": "asr"}, {"max_prune_fraction": 0.0}])
def test_anp_refuses_bad_hyperparameters(params):
    with pytest.raises(ParamError):
        prepare("badnets", "anp", defender_params=params, architecture=ARCHITECTURE)


def test_anp_needs_clean_samples(badnets):
    prepared, splits, model, _ = badnets
    with pytest.raises(ParamError, match="at least 10 clean samples"):
        AdversarialNeuronPruning().defend(model, prepared.task, Split(splits.clean.x[:5], splits.clean.y[:5]), torch.Generator())
