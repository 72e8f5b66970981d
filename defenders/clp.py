from __future__ import annotations

from typing import cast

import torch
from torch import nn

from arena.capabilities import BatchNormalized
from arena.params import Float, Space
from arena.protocol import DefenseOutcome
from arena.registry import register_defender
from arena.strategy import Defender, DefenseContext


@torch.no_grad()
def channel_lipschitz_bounds(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """The upper bound of each output channel's Lipschitz constant (UCLC) through `conv` and the
    BN that normalises it: the spectral norm of the channel's kernel, as an (in_channels,
    kernel area) matrix, times |γ| / sqrt(running_var + eps). (C,)"""
    kernels = conv.weight.reshape(conv.out_channels, conv.in_channels // conv.groups, -1)
    spectral = torch.linalg.matrix_norm(kernels, ord=2)
    assert bn.weight is not None and bn.running_var is not None, "an affine BN with running statistics"
    return spectral * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()


def lipschitz_outliers(bounds: torch.Tensor, u: float) -> list[int]:
    """The channels of one layer whose UCLC exceeds the layer's mean + u · std (unbiased std, as
    in the released code)."""
    return torch.nonzero(bounds > bounds.mean() + u * bounds.std()).flatten().tolist()


@torch.no_grad()
def prune_bn_channels(bn: nn.BatchNorm2d, channels: list[int]) -> None:
    """Remove channels after their BN: weight and bias set to 0, so the channel outputs 0."""
    assert bn.weight is not None and bn.bias is not None
    bn.weight[channels] = 0.0
    bn.bias[channels] = 0.0


@register_defender
class ChannelLipschitznessPruning(Defender):
    """Data-free pruning of the channels with an outlying Lipschitz upper bound (CLP).

    Paper: Zheng, Tang, Li, Liu, "Data-Free Backdoor Removal Based on Channel Lipschitzness"
    (ECCV 2022). A channel that a trigger switches on must amplify a small input change into a
    large output: its Lipschitz constant, as a map from the layer's input to its BN output, is
    large. CLP bounds it from the weights alone (UCLC: the spectral norm of the channel's conv
    kernel times |γ| / σ of its BN) and, within each (conv, BN) pair of the model, prunes the
    channels whose UCLC exceeds the layer's mean + u · std (u = 3 in the paper), by setting the
    BN weight and bias of the channel to 0. No data is read: the clean split is left alone.
    Moving parts: the Lipschitz ranking (the same number of channels pruned at random per layer
    leaves the backdoor) and u (a large u prunes nothing).
    Attacks on its assumptions (that backdoor channels are few, per layer, and stand out by
    their weights): a backdoor spread over many channels, or trained with a Lipschitz or weight
    penalty on its channels, or living in layers without batch normalisation (here the conv
    head and the dense classifier, and each block's second conv, whose output is summed with
    the shortcut before the next BN).
    Deviations: only the (conv, BN) pairs the architecture names (`conv_batch_norms`: a block's
    second conv is summed with its shortcut before any BN, so none of its channels has a BN
    channel of its own; the released code pairs each BN with whatever conv precedes it in module
    order); σ includes the BN's eps (the released code takes sqrt(running_var)).
    """

    name = "clp"
    version = "2"  # 2: the harness seeds defenses from what they hold (issue #17)
    paper = "Zheng, Tang, Li, Liu. Data-Free Backdoor Removal Based on Channel Lipschitzness (ECCV 2022)"
    deviations = "only the (conv, BN) pairs the architecture names; sigma includes the BN's eps (code: sqrt(running_var))"
    min_clean = 0
    data_free = True  # the harness hands it an empty clean split
    requires = (BatchNormalized,)
    space = Space(
        u=Float(3.0, 0.0, 100.0, low_open=True, help="prune channels whose Lipschitz bound exceeds the layer's mean + u * std", search=(1.0, 5.0)),
    )

    def run(self, model: nn.Module, ctx: DefenseContext) -> DefenseOutcome:
        pairs = cast(BatchNormalized, model).conv_batch_norms()
        for done, (conv, bn) in enumerate(pairs, 1):
            prune_bn_channels(bn, lipschitz_outliers(channel_lipschitz_bounds(conv, bn), self.params["u"]))
            ctx.progress("prune channels", done, len(pairs))
        return DefenseOutcome(model=model)
