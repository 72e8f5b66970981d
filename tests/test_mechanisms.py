"""The shared mechanisms strategies are built from: freezing (arena.training), the MAD anomaly
index (arena.outliers), the pruning loop (arena.pruning), unlearning (arena.repair) and model
inversion (arena.inversion), on small digits models."""

import copy
import functools

import pytest
import torch

import arena.repair
from arena.data import load_dataset, player_splits
from arena.inversion import batch_total_variation, inversion_prior, invert_model, total_variation
from arena.models import build_model
from arena.outliers import MAD_CONSISTENCY, anomaly_indices
from arena.protocol import Split, TaskSpec
from arena.pruning import mean_channel_activation, prune_until, pruned_channels, set_pruned
from arena.repair import unlearn
from arena.training import accuracy, fit, frozen, predict, trainable

TASK = TaskSpec("digits", 10, (1, 8, 8), "badnets_cnn", 5)
SPLITS = player_splits(load_dataset("digits"), 0.1)


@functools.cache
def _trained() -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    return fit(build_model(TASK, generator), SPLITS.attacker, epochs=5, lr=1e-3, batch_size=64, generator=generator)


def _model() -> torch.nn.Module:
    """A small digits model trained honestly (seed 0), as a copy the test may change."""
    return copy.deepcopy(_trained())


# --- arena.training: frozen, trainable ---------------------------------------------------------


def test_frozen_takes_weights_out_of_autograd_and_restores_them_even_when_the_body_raises():
    model = _model()
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)  # a weight the caller had frozen stays frozen after
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"), frozen(model) as inside:
        assert inside is model and not model.training
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == before and not first.requires_grad


def test_trainable_inside_frozen_retrains_only_the_named_layers():
    model = _model()
    start = copy.deepcopy(model.state_dict())
    with frozen(model):
        with trainable(model.fc1, model.fc2):
            assert all(p.requires_grad for p in [*model.fc1.parameters(), *model.fc2.parameters()])
            assert not any(p.requires_grad for p in model.conv1.parameters())
            fit(model, SPLITS.clean, epochs=1, lr=1e-2, generator=torch.Generator().manual_seed(0))
        assert not any(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    after = model.state_dict()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


# --- arena.outliers -----------------------------------------------------------------------------


def test_anomaly_index_is_the_lower_side_mad_score():
    norms = torch.tensor([10.0, 11.0, 9.0, 10.0, 12.0, 2.0])
    index = anomaly_indices(norms)
    # median 10, |dev| = [0,1,1,0,2,8], MAD = 1.4826 * 1
    assert index[5] == pytest.approx(8 / 1.4826)
    assert index[4] == pytest.approx(-2 / 1.4826)  # above the median: negative, never flagged
    assert (index > 2).nonzero().flatten().tolist() == [5]


def test_anomaly_index_flags_a_planted_small_outlier_and_scores_the_median_zero():
    norms = 20 + torch.randn(10, generator=torch.Generator().manual_seed(0))
    norms[3] = 5.0
    index = anomaly_indices(norms)
    assert (index > 2).nonzero().flatten().tolist() == [3]
    assert float(index[norms.argsort()[4]]) == 0.0  # the median (torch's: the lower of the middle two)
    assert MAD_CONSISTENCY == 1.4826
    assert torch.isfinite(anomaly_indices(torch.full((5,), 3.0))).all()  # no spread: no division by zero


# --- arena.pruning: prune_until -----------------------------------------------------------------


def _most_active_first(model):
    return torch.argsort(mean_channel_activation(model, SPLITS.clean.x), descending=True).tolist()


def test_prune_until_stops_on_the_stop_rule():
    model = _model()
    order = _most_active_first(model)[::-1]  # least active first: cheap channels
    asked = []
    result = prune_until(model, order, SPLITS.clean, max_accuracy_drop=1.0, stop=lambda: asked.append(1) or len(asked) == 3)
    assert result.stopped == "stop" and result.channels == order[:3]
    assert pruned_channels(model) == sorted(order[:3])
    assert result.accuracy_drop == pytest.approx(accuracy(_trained(), SPLITS.clean) - accuracy(model, SPLITS.clean))


def test_prune_until_puts_back_the_channel_that_crosses_the_accuracy_limit():
    model = _model()
    clean = SPLITS.clean
    base = accuracy(model, clean)
    order = _most_active_first(model)
    result = prune_until(model, order, clean, max_accuracy_drop=0.02, stop=lambda: False)
    assert result.stopped == "accuracy"
    crossing = order[len(result.channels)]
    assert result.channels == order[: len(result.channels)] and crossing not in pruned_channels(model)
    assert pruned_channels(model) == sorted(result.channels)
    assert accuracy(model, clean) >= base - 0.02 and result.accuracy_drop == pytest.approx(base - accuracy(model, clean))
    set_pruned(model, [crossing])
    assert accuracy(model, clean) < base - 0.02


def test_prune_until_runs_out_of_channels():
    model = _model()
    result = prune_until(model, [0, 1], SPLITS.clean, max_accuracy_drop=1.0)
    assert result.stopped == "exhausted" and result.channels == [0, 1] and pruned_channels(model) == [0, 1]


# --- arena.repair: unlearn ----------------------------------------------------------------------


def _stamp_in_place(subset: Split) -> Split:
    """Stamps a white corner on the drawn samples, changing the subset it is given in place."""
    subset.x[..., -2:, -2:] = 1.0
    return subset


def test_unlearn_trains_on_the_clean_split_plus_stamped_copies_at_their_true_labels(monkeypatch):
    clean = SPLITS.clean
    before = clean.x.clone(), clean.y.clone()
    seen = []
    monkeypatch.setattr(arena.repair, "fit", lambda model, data, **kw: seen.append((data, kw)) or model)
    unlearn(_model(), clean, 0.25, _stamp_in_place, epochs=3, lr=1e-3, generator=torch.Generator().manual_seed(7), stage="unlearn")
    ((data, kw),) = seen
    count = round(0.25 * len(clean))
    idx = torch.randperm(len(clean), generator=torch.Generator().manual_seed(7))[:count]  # drawn first
    assert len(data) == len(clean) + count
    assert torch.equal(data.x[: len(clean)], before[0]) and torch.equal(data.y[: len(clean)], before[1])
    assert torch.equal(data.y[len(clean) :], clean.y[idx])  # true labels, in the drawn order
    assert torch.all(data.x[len(clean) :, ..., -2:, -2:] == 1.0)
    assert kw["epochs"] == 3 and kw["batch_size"] == 32 and kw["stage"] == "unlearn"
    assert torch.equal(clean.x, before[0]) and torch.equal(clean.y, before[1])  # the caller's split is untouched


def test_unlearn_changes_the_model_not_the_callers_split():
    clean = SPLITS.clean
    before = clean.x.clone()
    model = _model()
    out = unlearn(model, clean, 1.0, _stamp_in_place, epochs=1, lr=1e-3, generator=torch.Generator().manual_seed(0), stage="unlearn")
    assert out is model and not torch.equal(model.fc2.weight, _trained().fc2.weight)
    assert torch.equal(clean.x, before)


# --- arena.inversion ----------------------------------------------------------------------------


def test_invert_model_recovers_inputs_the_model_assigns_to_their_labels():
    model = _model()
    weights = copy.deepcopy(model.state_dict())
    inverted = invert_model(model, 10, 4, TASK.input_shape, steps=150, lr=0.1, prior=lambda x: 0.5 * batch_total_variation(x), generator=torch.Generator().manual_seed(0), start="grey")
    assert inverted.x.shape == (40, 1, 8, 8) and torch.equal(inverted.y, torch.arange(10).repeat_interleave(4))
    assert float(inverted.x.min()) >= 0.0 and float(inverted.x.max()) <= 1.0
    assert float((predict(model, inverted.x) == inverted.y).float().mean()) >= 0.95
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # the model is not trained
    assert all(p.requires_grad for p in model.parameters())


def test_invert_model_draws_noise_at_every_step_when_given_a_std_even_zero():
    model = _model()
    prior = lambda x: inversion_prior(x, {"tv_weight": 0.3, "l2_weight": 2.0, "binary_weight": 3.0}).mean()  # noqa: E731
    runs = {}
    for noise in (None, 0.0):
        g = torch.Generator().manual_seed(0)
        runs[noise] = (invert_model(model, 10, 2, TASK.input_shape, steps=5, lr=0.1, prior=prior, generator=g, noise=noise), torch.rand(1, generator=g))
    assert torch.equal(runs[None][0].x, runs[0.0][0].x)  # zero noise changes no input
    assert not torch.equal(runs[None][1], runs[0.0][1])  # but it was drawn: the generator moved on
    first = invert_model(model, 10, 2, TASK.input_shape, steps=5, lr=0.1, prior=prior, generator=torch.Generator().manual_seed(0), prior_first=True)
    assert torch.allclose(first.x, runs[None][0].x, atol=1e-5)  # the order of evaluation moves only the last bits
    start = invert_model(model, 10, 2, TASK.input_shape, steps=0, lr=0.1, prior=prior, generator=torch.Generator().manual_seed(0))
    assert float(start.x.min()) >= 1e-3 - 1e-6 and float(start.x.max()) <= 1 - 1e-3 + 1e-6  # "uniform": clamped uniform pixels


def test_the_two_total_variations_agree_up_to_rounding():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    per_image = total_variation(x)
    assert per_image.shape == (6,)
    assert float(batch_total_variation(x)) == pytest.approx(float(per_image.mean()), rel=1e-6)
    smooth = torch.zeros(1, 1, 8, 8)
    assert float(total_variation(smooth)) == 0.0 and float(total_variation(x[:1])) > 0.3
