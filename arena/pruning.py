"""Channel pruning of the last convolutional layer, shared by the pruning defenses (Fine-Pruning's
`pruning` and `fine_pruning`, Neural Cleanse's pruning mitigation) and the pruning-aware attack.

A model is prunable when it offers `last_conv` (the nn.Conv2d), `mask` (an arena.models.ChannelMask
on its output), `last_conv_preactivations(x)` and `last_conv_activations(x)`, as
arena.models.BadNetsCNN does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from arena.capabilities import Prunable
from arena.protocol import Split
from arena.training import accuracy


def prunable(model: nn.Module) -> Prunable:
    """`model` seen through the Prunable capability (strategies declare they need it)."""
    return cast(Prunable, model)


@torch.no_grad()
def mean_channel_activation(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Mean post-ReLU activation of each last-conv channel over inputs x and positions: (C,)."""
    model.eval()
    total = None
    for start in range(0, len(x), batch_size):
        a = prunable(model).last_conv_activations(x[start : start + batch_size].contiguous(memory_format=torch.channels_last))
        s = a.sum(dim=(0, 2, 3))
        total = s if total is None else total + s
    assert total is not None, "no inputs"
    positions = len(x) * a.shape[2] * a.shape[3]
    return total / positions


@torch.no_grad()
def max_preactivation(model: nn.Module, x: torch.Tensor, channels: list[int], batch_size: int = 2048) -> torch.Tensor:
    """Largest pre-ReLU value of the given last-conv channels over inputs x and positions: (len(channels),)."""
    model.eval()
    best = torch.full((len(channels),), -torch.inf, device=x.device)
    for start in range(0, len(x), batch_size):
        pre = prunable(model).last_conv_preactivations(x[start : start + batch_size].contiguous(memory_format=torch.channels_last))
        best = torch.maximum(best, pre[:, channels].amax(dim=(0, 2, 3)))
    return best


def pruned_channels(model: nn.Module) -> list[int]:
    return torch.nonzero(prunable(model).mask.mask == 0).flatten().tolist()


def set_pruned(model: nn.Module, channels: list[int], pruned: bool = True) -> None:
    with torch.no_grad():
        prunable(model).mask.mask[channels] = 0.0 if pruned else 1.0


@dataclass(frozen=True)
class PruneResult:
    """What `prune_until` removed and why it stopped."""

    channels: list[int]  # pruned, in order
    stopped: str  # "stop": the stop rule held; "accuracy": the next channel would cross the accuracy limit (it was put back); "exhausted": the order ran out
    accuracy_drop: float  # clean accuracy lost, after pruning


def prune_until(model: nn.Module, channels: Sequence[int], clean: Split, max_accuracy_drop: float, stop: Callable[[], bool] | None = None) -> PruneResult:
    """The one pruning loop: remove last-conv `channels` one by one, in the order given, until
    accuracy on `clean` falls more than `max_accuracy_drop` below the start (the channel whose
    removal crossed it is put back), until `stop()`, asked after each kept removal, holds, or
    until the order runs out. Used by `prune_by_activation` (Fine-Pruning's pruning, the
    pruning-aware attack) and by Neural Cleanse's pruning mitigation (stop: the reversed
    trigger no longer works)."""
    base = accuracy(model, clean)
    current = base
    removed: list[int] = []
    for channel in channels:
        set_pruned(model, [channel])
        if (after := accuracy(model, clean)) < base - max_accuracy_drop:
            set_pruned(model, [channel], pruned=False)
            return PruneResult(removed, "accuracy", base - current)
        removed.append(channel)
        current = after
        if stop is not None and stop():
            return PruneResult(removed, "stop", base - current)
    return PruneResult(removed, "exhausted", base - current)


def prune_by_activation(model: nn.Module, clean: Split, max_accuracy_drop: float, max_fraction: float = 1.0) -> list[int]:
    """Fine-Pruning's pruning: remove last-conv channels in increasing order of mean clean
    activation until accuracy on `clean` falls more than `max_accuracy_drop` below the start.

    The channel whose removal crossed the threshold is put back. At least one channel is always
    kept, and at most `max_fraction` of the channels are removed. Returns the channels pruned.
    """
    activation = mean_channel_activation(model, clean.x)
    already = set(pruned_channels(model))
    order = [c for c in torch.argsort(activation, stable=True).tolist() if c not in already]
    limit = min(len(order) - 1, int(max_fraction * activation.numel()) - len(already))
    return prune_until(model, order[: max(0, limit)], clean, max_accuracy_drop).channels
