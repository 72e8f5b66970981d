"""One of each extension point, installed as a plugin (entry points only): a trigger kind, an
architecture, a dataset, and an attack that uses the three. Imports only the public API."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from arena import (
    AllToOne,
    Architecture,
    Attacker,
    AttackOutput,
    Dataset,
    DatasetSource,
    Float,
    Int,
    Space,
    Split,
    Trigger,
    build_model,
    fit,
    goal_from_dict,
    poison,
)


class Stripes(Trigger):
    """Every other row of the top `rows` rows set to full intensity."""

    kind = "stripes"

    def __init__(self, goal: Any, rows: int, name: str = "stripes", probe: bool = False) -> None:
        self.goal, self.rows, self.name, self.probe = goal, rows, name, probe

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, :, 0 : self.rows : 2, :] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "goal": self.goal.to_dict(), "probe": self.probe, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stripes:
        return cls(goal_from_dict(data["goal"]), int(data["rows"]), data["name"], bool(data["probe"]))


class TinyMLP(nn.Module):
    """Flatten, one hidden layer, logits: no convolution, so nothing to prune."""

    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


TINY_MLP = Architecture("tiny_mlp", build=lambda task: TinyMLP(task.input_shape[0] * task.input_shape[1] * task.input_shape[2], task.num_classes))


def _digits_negative() -> Dataset:
    """scikit-learn's 8x8 digits, white on black turned black on white, with a fixed 30% test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = 1 - torch.from_numpy(bunch.images).float().unsqueeze(1) / 16
    y = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(7))
    test, train = order[: len(y) * 3 // 10], order[len(y) * 3 // 10 :]
    return Dataset("digits_negative", Split(x[train], y[train]), Split(x[test], y[test]), 10, epochs=20)


DIGITS_NEGATIVE = DatasetSource("digits_negative", _digits_negative)


class Striped(Attacker):
    """Training-set poisoning with the stripes trigger (BadNets with another trigger kind)."""

    name = "striped"
    version = "1"
    paper = "test plugin after Gu et al., BadNets (2017)"
    space = Space(
        target=Int(0, 0, 9, help="target label"),
        rows=Int(4, 1, 8, help="rows the stripes cover"),
        poison_rate=Float(0.2, 0.0, 1.0, low_open=True, help="poisoned copies, as a fraction of the data"),
    )

    def run(self, ctx: Any) -> AttackOutput:
        trigger = Stripes(AllToOne(self.params["target"]), self.params["rows"])
        data = poison(ctx.data, trigger, self.params["poison_rate"], ctx.generator, ctx.task.num_classes)
        model = fit(build_model(ctx.task, ctx.generator), data, epochs=ctx.task.epochs, lr=3e-3, generator=ctx.generator)
        return AttackOutput(model, [trigger])
