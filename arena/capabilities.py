"""What a strategy needs of a model, as `typing.Protocol`s checked before anything runs (docs/design.md §10).

A defense declares the capabilities it needs (`Defender.requires`, or `required_capabilities()`
where they depend on its hyperparameters); so does an attack of the models it trains. A suite is
validated against them: a defense that cannot act on an attacker's published architecture makes
an `n/a` cell (the defense is not run; the published model is deployed as it is and scored so),
never an error row, and never a reason to drop a strategy from the game.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Prunable(Protocol):
    """A model with a prunable last conv layer (arena.models' architectures): the layer, its
    channels' activations before and after the ReLU, and the channel mask that prunes them."""

    mask: Any  # an arena.models.ChannelMask on the layer's output
    last_conv: nn.Conv2d

    def last_conv_preactivations(self, x: torch.Tensor) -> torch.Tensor: ...

    def last_conv_activations(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HasHiddenLayer(Protocol):
    """A model whose last two layers are dense: `fc1` into a hidden layer, whose post-ReLU
    activations it exposes, and `fc2` from it to the logits (arena.models.BadNetsCNN)."""

    fc1: nn.Linear
    fc2: nn.Linear

    def hidden_activations(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HasFeatureLayers(Protocol):
    """A model that names the layers whose outputs are its feature maps, shallow to deep (both
    registered architectures). A defense reads a feature map with a forward hook on the layer,
    and replaces it by returning a tensor from the hook (NAD's attention, ABS's stimulation,
    BTI-DBF's feature mask)."""

    def feature_layers(self) -> list[nn.Module]: ...


@runtime_checkable
class BatchNormalized(Protocol):
    """A model with batch normalisation (arena.models.PreActResNet): its BN layers, and the conv
    layers whose output channels a BN layer normalises one for one (ANP perturbs and prunes BN
    neurons; CLP bounds each channel's Lipschitz constant through its conv and BN)."""

    def batch_norms(self) -> list[nn.BatchNorm2d]: ...

    def conv_batch_norms(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]: ...


def protocol_members(capability: type) -> set[str]:
    """The attributes and methods a capability protocol declares (its own, not Protocol's)."""
    return {name for name in vars(capability) if not name.startswith("_")} | set(getattr(capability, "__annotations__", {}))


def missing_capabilities(model: nn.Module, required: tuple[type, ...]) -> list[str]:
    """The names of the `required` capability protocols that `model` lacks.

    Each member is looked up with `hasattr`, as a strategy will use it: a torch module's layers
    live in its `_modules` and are found only through `nn.Module.__getattr__`, which the static
    lookup of `isinstance(model, Protocol)` skips from Python 3.12 on; and a wrapper's property
    that forwards to a host without the member raises AttributeError, so it counts as missing."""
    return [cap.__name__ for cap in required if not all(hasattr(model, member) for member in protocol_members(cap))]


def not_applicable_reason(strategy: Any, model: nn.Module) -> str | None:
    """Why `strategy` cannot act on `model` (None when it can): the capabilities it lacks."""
    missing = missing_capabilities(model, strategy.required_capabilities())
    if not missing:
        return None
    return f"{strategy.kind} {strategy.name!r} needs a model that is {' and '.join(missing)}; {type(model).__name__} is not"
