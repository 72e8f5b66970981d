import pytest
import torch

from arena.errors import ParamError
from arena.protocol import AllToOne, Split, Untargeted
from arena.triggers import PatchTrigger, poison, trigger_from_dict


def test_patch_writes_only_its_footprint_and_leaves_the_input_alone():
    x = torch.full((2, 1, 8, 8), 0.5)
    trigger = PatchTrigger(AllToOne(0), size=3, position="bottom_right", margin=1)
    out = trigger.apply(x)
    footprint = trigger.mask((1, 8, 8)).bool()
    assert torch.equal(x, torch.full((2, 1, 8, 8), 0.5))
    assert torch.all(out[:, :, ~footprint] == 0.5)
    assert footprint[4:7, 4:7].all() and footprint.sum() == 9
    assert set(out[:, :, footprint].unique().tolist()) == {0.0, 1.0}  # checkerboard


def test_trigger_round_trips_through_json():
    trigger = PatchTrigger(Untargeted(), size=2, position="top_left", pattern="white", margin=0, name="t")
    again = trigger_from_dict(trigger.to_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(trigger.apply(x), again.apply(x)) and again.goal == trigger.goal


def test_trigger_that_does_not_fit_is_refused():
    with pytest.raises(ParamError, match="does not fit"):
        PatchTrigger(AllToOne(0), size=8, margin=1).check_fits((1, 8, 8))


def test_poison_appends_relabelled_triggered_copies_of_non_target_samples():
    y = torch.arange(10).repeat(10)
    clean = Split(torch.zeros(100, 1, 8, 8), y)
    trigger = PatchTrigger(AllToOne(3), size=2)
    out = poison(clean, trigger, 0.2, torch.Generator().manual_seed(0), 10)
    assert len(out) == 120
    assert torch.equal(out.x[:100], clean.x) and torch.equal(out.y[:100], clean.y)
    assert torch.all(out.y[100:] == 3)
    assert torch.all(out.x[100:].sum(dim=(1, 2, 3)) > 0)  # stamped


def test_untargeted_poison_never_keeps_the_true_label():
    y = torch.arange(10).repeat(20)
    clean = Split(torch.zeros(200, 1, 8, 8), y)
    g = torch.Generator().manual_seed(0)
    labels = Untargeted().relabel(y, g, 10)
    assert torch.all(labels != y) and labels.min() >= 0 and labels.max() <= 9
    assert len(poison(clean, PatchTrigger(Untargeted(), size=2), 0.5, g, 10)) == 300
