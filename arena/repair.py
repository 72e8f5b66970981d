"""Model repair: the mechanisms defenses use to return a repaired model (docs/design.md §2).

- `fine_tune` with `FINE_TUNE_SPACE`: continue training on the clean split for a step budget
  (`fine_tuning`, and `fine_pruning` after its pruning).
- `PRUNE_SPACE`: the hyperparameters of Fine-Pruning's pruning (`pruning`, `fine_pruning`); the
  pruning loop itself is arena.pruning's `prune_until` / `prune_by_activation`.
- `unlearn`: fine-tune on the clean split plus a share of it stamped with a suspected trigger and
  kept at its true labels, so the model learns to ignore the trigger (Neural Cleanse's unlearning
  with its reversed triggers, DeepInspect's patching with its generated triggers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from arena.params import Float, Int, Space
from arena.protocol import ProgressFn, Split, no_progress
from arena.training import fit

FINE_TUNE_SPACE = Space(
    steps=Int(300, 1, 1_000_000, help="optimiser steps of fine-tuning on the clean split", search=(50, 1000)),
    lr=Float(1e-3, 1e-6, 1.0, log=True, help="Adam learning rate", search=(1e-4, 1e-2)),
    batch_size=Int(32, 1, 4096, help="minibatch size", search=(16, 128)),
)

PRUNE_SPACE = Space(
    max_accuracy_drop=Float(0.04, 0.0, 1.0, help="stop before clean accuracy falls more than this", search=(0.01, 0.2)),
    max_prune_fraction=Float(0.95, 0.0, 1.0, low_open=True, help="never prune more than this share of channels", search=(0.5, 0.99)),
)


def fine_tune(model: nn.Module, clean: Split, params: dict[str, Any], generator: torch.Generator, progress: ProgressFn = no_progress) -> nn.Module:
    """Continue training on the clean split for about `steps` steps (whole epochs), with the
    FINE_TUNE_SPACE parameters in `params`."""
    per_epoch = math.ceil(len(clean) / params["batch_size"])
    epochs = max(1, round(params["steps"] / per_epoch))
    return fit(model, clean, epochs=epochs, lr=params["lr"], batch_size=params["batch_size"], generator=generator, stage="fine-tune", progress=progress)


def unlearn(
    model: nn.Module,
    clean: Split,
    rate: float,
    stamp: Callable[[Split], Split],
    epochs: int,
    lr: float,
    generator: torch.Generator,
    stage: str,
    progress: ProgressFn = no_progress,
    batch_size: int = 32,
) -> nn.Module:
    """Fine-tune `model` on the clean split plus stamped copies of a random `rate` share of it.

    The share (at least one sample) is drawn first, by one `randperm` of `generator`; `stamp`
    maps that subset to its stamped samples with their true labels (it may draw from the same
    generator after). The training set is the clean split followed by the stamped samples; the
    caller's split is not changed.
    """
    count = max(1, round(rate * len(clean)))
    idx = torch.randperm(len(clean), generator=generator)[:count]
    stamped = stamp(clean.subset(idx))
    data = Split(torch.cat([clean.x, stamped.x]), torch.cat([clean.y, stamped.y]))
    return fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size, generator=generator, stage=stage, progress=progress)
