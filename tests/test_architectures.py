"""The registered architectures: the pre-activation ResNet trains, carries a backdoor, and has the
capabilities it declares; a suite on it makes BN defenses applicable and on BadNetsCNN n/a."""

import pytest
import torch
from torch import nn

from arena.capabilities import BatchNormalized, HasFeatureLayers, HasHiddenLayer, Prunable, missing_capabilities
from arena.match import prepare, run_match, task_for
from arena.models import build_model
from arena.pruning import mean_channel_activation, prune_by_activation


@pytest.mark.parametrize("dataset_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_preact_resnet_runs_on_each_image_size_with_batch_norm_in_its_blocks(dataset_shape):
    from arena.protocol import TaskSpec

    model = build_model(TaskSpec("x", 10, dataset_shape, "preact_resnet", 1), torch.Generator().manual_seed(0))
    assert model(torch.rand(3, *dataset_shape)).shape == (3, 10)
    assert missing_capabilities(model, (Prunable, HasFeatureLayers, BatchNormalized)) == [] and missing_capabilities(model, (HasHiddenLayer,)) == ["HasHiddenLayer"]
    assert len(model.batch_norms()) == 7 and all(isinstance(bn, nn.BatchNorm2d) for bn in model.batch_norms())
    for conv, bn in model.conv_batch_norms():  # each BN normalises its conv's channels one for one
        assert conv.out_channels == bn.num_features
    shapes = []
    hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for layer in model.feature_layers()]
    model(torch.rand(2, *dataset_shape))
    for h in hooks:
        h.remove()
    assert [s[1] for s in shapes] == [16, 32, 64, 64]  # the three stages and the conv head, shallow to deep


def test_the_same_generator_gives_the_same_resnet_and_another_a_different_one():
    task = task_for("digits", "preact_resnet", None)
    a, b, c = (build_model(task, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_a_backdoor_trains_into_the_resnet_and_pruning_acts_on_its_head(store, splits):
    honest = run_match(prepare("none", "none", architecture="preact_resnet"), store).to_json()
    attacked = run_match(prepare("badnets", "none", architecture="preact_resnet"), store).to_json()
    assert honest["attacked"]["ca"] > 0.9 and attacked["attacked"]["asr"] > 0.9 and attacked["stealthy"]
    model = build_model(task_for("digits", "preact_resnet", None), torch.Generator().manual_seed(0))
    pruned = prune_by_activation(model, splits.clean, max_accuracy_drop=1.0, max_fraction=0.5)
    assert len(pruned) == 32 and float(mean_channel_activation(model, splits.clean.x)[pruned].abs().max()) == 0.0


def test_a_bn_defense_is_applicable_on_the_resnet(store):
    """(On badnets_cnn the pair is n/a: tests/test_match.py.)"""
    on_resnet = run_match(prepare("badnets", "clp", architecture="preact_resnet"), store).to_json()
    assert on_resnet["defended"]["not_applicable"] is None
