"""Input squeezers (Xu, Evans, Qi, "Feature Squeezing", NDSS 2018), shared by the feature
squeezing defense and any plugin that squeezes inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Images in [0, 1] quantised to 2**bits levels per pixel."""
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_smooth(x: torch.Tensor, window: int) -> torch.Tensor:
    """Each pixel replaced by the median of its window x window neighbourhood (reflect padding)."""
    if window <= 1:
        return x
    before, after = (window - 1) // 2, window // 2  # an even window pads one side more, as in the paper
    patches = F.unfold(F.pad(x, (before, after, before, after), mode="reflect"), window).reshape(x.shape[0], x.shape[1], window * window, -1)
    # the lower median, as torch.median gives, picked from the sorted window: CUDA's median (which
    # also returns indices) has no deterministic implementation, sorting does; the value is the same element
    return patches.sort(dim=2).values.select(2, (window * window - 1) // 2).reshape(x.shape)
