"""Architectures. A task names its architecture; attackers must keep it (docs/design.md §1)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from arena.errors import UsageError
from arena.protocol import TaskSpec
from arena.registry import RegistrationError, Registry


class ChannelMask(nn.Module):
    """Per-channel 0/1 gate: pruning a channel sets its entry to 0 (it stays 0 while fine-tuning)."""

    mask: torch.Tensor  # a buffer: 1 keeps a channel, 0 prunes it

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, 1, 1)


class InputNorm(nn.Module):
    """Per-channel standardisation, the model's first operation: (x - shift) / scale. A model has
    one only when the attacker's recipe standardises its inputs (`preprocessing: standardize`);
    being a layer, the published model still takes the task's inputs in [0, 1], whoever
    evaluates it."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift.view(1, -1, 1, 1)) / self.scale.view(1, -1, 1, 1)


def _adopt_input_norm(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Loading the state of a model that standardises its inputs gives the fresh model its layer."""
    if f"{prefix}input_norm.shift" in state_dict and getattr(module, "input_norm", None) is None:
        module.input_norm = InputNorm(state_dict[f"{prefix}input_norm.shift"].numel()).to(state_dict[f"{prefix}input_norm.shift"].device)


class BadNetsCNN(nn.Module):
    """The BadNets MNIST network shape: two conv+ReLU+max-pool stages and two dense layers.

    Widths 16 and 64 (BadNets used 16 and 32): with 32 channels the last conv layer of our
    Fashion-MNIST models has no spare capacity, so no channel is dormant on clean data and
    the backdoor shares every neuron; 64 gives the over-parameterisation pruning needs (see
    benchmarks/RESULTS.md).

    Kernel size follows the input: 5x5 unpadded for MNIST-sized images (as in BadNets), 3x3
    padded for tiny ones such as the 8x8 `digits`. The last conv layer's channels are the
    neurons that pruning and the pruning-aware attack act on; its `mask` records pruning.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, int] = (16, 64), hidden: int = 512) -> None:
        super().__init__()
        channels, height, width = input_shape
        kernel, pad = (5, 0) if min(height, width) >= 20 else (3, 1)
        # None unless the recipe standardises inputs (arena.models.standardize_inputs): a model
        # without it has exactly the state of the models published before the layer existed
        self.input_norm: InputNorm | None = None
        self.register_load_state_dict_pre_hook(_adopt_input_norm)
        self.conv1 = nn.Conv2d(channels, widths[0], kernel, padding=pad)
        self.conv2 = nn.Conv2d(widths[0], widths[1], kernel, padding=pad)
        self.mask = ChannelMask(widths[1])
        self.pool = nn.MaxPool2d(2)
        h = ((height + 2 * pad - kernel + 1) // 2 + 2 * pad - kernel + 1) // 2
        w = ((width + 2 * pad - kernel + 1) // 2 + 2 * pad - kernel + 1) // 2
        self.fc1 = nn.Linear(widths[1] * h * w, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.conv2

    def last_conv_preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-ReLU outputs of the last conv layer: (N, C, H, W)."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.conv2(self.pool(torch.relu(self.conv1(x))))

    def last_conv_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU, post-mask activations of the last conv layer, before pooling: (N, C, H, W)."""
        return self.mask(torch.relu(self.last_conv_preactivations(x)))

    def hidden_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU outputs of the hidden dense layer `fc1`: (N, hidden)."""
        return torch.relu(self.fc1(self.pool(self.last_conv_activations(x)).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden_activations(x))


    def feature_layers(self) -> list[nn.Module]:
        """The layers whose outputs are the model's feature maps, shallow to deep (HasFeatureLayers):
        the first conv layer (its pre-ReLU output: the ReLU is functional) and the last conv
        layer's channel mask (post-ReLU, post-mask activations)."""
        return [self.conv1, self.mask]


class PreActBlock(nn.Module):
    """He et al.'s pre-activation residual block: BN-ReLU-conv, BN-ReLU-conv, plus the input
    (through a strided 1x1 conv where the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inputs)
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False) if stride != 1 or inputs != outputs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)  # as in the paper's code, the projection sees the activated input
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """A small pre-activation ResNet (He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual
    Networks", ECCV 2016), sized for 28x28 images on 2 CPU cores, with batch normalisation.

    A 3x3 stem conv, three stages of one pre-activation block each (widths 16, 32, 64; each
    halves the resolution: 28x28 becomes 14, 7 and 4, so the costliest stage works on 14x14 and
    an epoch of Fashion-MNIST costs about what BadNetsCNN's does), the final BN-ReLU, then a 3x3 conv head with bias, its ReLU and
    channel mask, global average pooling and the linear classifier. PreAct-ResNet-18 (BackdoorBench's
    network) has four stages of two blocks from 64 channels: about 11M parameters against this
    one's 0.1M, out of reach of the 2-core budget. The conv head is ours: it is the last conv
    layer whose channels the pruning mechanisms (arena.pruning) and the pruning-based attacks act
    on, as in BadNetsCNN, so those strategies stay applicable; the blocks below it carry the
    batch normalisation that ANP and CLP need (`batch_norms`, `conv_batch_norms`).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        channels = input_shape[0]
        self.input_norm: InputNorm | None = None
        self.register_load_state_dict_pre_hook(_adopt_input_norm)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        self.block1 = PreActBlock(widths[0], widths[0], 2)
        self.block2 = PreActBlock(widths[0], widths[1], 2)
        self.block3 = PreActBlock(widths[1], widths[2], 2)
        self.bn_final = nn.BatchNorm2d(widths[2])
        self.head = nn.Conv2d(widths[2], widths[2], 3, padding=1)
        self.mask = ChannelMask(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.head

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        return torch.relu(self.bn_final(self.block3(self.block2(self.block1(self.stem(x))))))

    def last_conv_preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-ReLU outputs of the conv head: (N, C, H, W)."""
        return self.head(self._trunk(x))

    def last_conv_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU, post-mask activations of the conv head: (N, C, H, W)."""
        return self.mask(torch.relu(self.last_conv_preactivations(x)))

    def feature_layers(self) -> list[nn.Module]:
        """The outputs of the three residual stages (before their next BN-ReLU) and the conv
        head's masked activations, shallow to deep (HasFeatureLayers)."""
        return [self.block1, self.block2, self.block3, self.mask]

    def batch_norms(self) -> list[nn.BatchNorm2d]:
        """Every batch-normalisation layer, input to output (BatchNormalized)."""
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    def conv_batch_norms(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The conv layers whose output a BN layer normalises channel for channel, with that BN
        (BatchNormalized): the stem with the first block's bn1, and each block's conv1 with its
        bn2. A block's conv2 is left out: its output is summed with the shortcut before the next
        BN, so no BN channel is its channel alone."""
        return [(self.stem, self.block1.bn1)] + [(b.conv1, b.bn2) for b in (self.block1, self.block2, self.block3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.last_conv_activations(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class Architecture:
    """A registered architecture (`build`: a fresh model for a task) or a wrapper an attack may put
    around one (`wrap`: host model and task to the published model, named `base+wrapper`).

    An attacker that changes the architecture declares the name of what it publishes, so the store
    can rebuild it; the attack's manifest records where the wrapper comes from (docs/design.md §10).
    """

    name: str
    build: Callable[[TaskSpec], nn.Module] | None = None
    wrap: Callable[[nn.Module, TaskSpec], nn.Module] | None = None

    @property
    def module(self) -> str:
        """The module that defines the architecture (for the manifest's origins)."""
        made_by = self.build or self.wrap
        return str(getattr(made_by, "__module__", __name__))


def _validate_architecture(entry: Any) -> None:
    if not isinstance(entry, Architecture) or (entry.build is None) == (entry.wrap is None):
        raise RegistrationError(f"{entry!r} is not an arena.models.Architecture with exactly one of `build` or `wrap`")


# Architectures and wrappers by name: a new one is one object, registered here or published under
# the entry point group `arena.architectures`.
ARCHITECTURES: Registry[Architecture] = Registry("architecture", group="arena.architectures", builtins=("arena.models",), key=lambda a: a.name, validate=_validate_architecture)
register_architecture = ARCHITECTURES.register


def _badnets_cnn(task: TaskSpec) -> nn.Module:
    return BadNetsCNN(task.input_shape, task.num_classes)


register_architecture(Architecture("badnets_cnn", build=_badnets_cnn))


def _preact_resnet(task: TaskSpec) -> nn.Module:
    return PreActResNet(task.input_shape, task.num_classes)


register_architecture(Architecture("preact_resnet", build=_preact_resnet))


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default layer initialisation, drawn from an explicit generator (no global seed)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)


PREPROCESSING = ("unit", "standardize")


def structure(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The model's state shapes, which say its architecture; an InputNorm layer (a recipe's
    standardisation, optional in any architecture with the slot) is not part of it."""
    optional = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, InputNorm))
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(optional)}


def scale_initial_weights(model: nn.Module, factor: float) -> None:
    """Multiply the initial weights of every conv and dense layer by `factor` (biases kept): the
    initialisation scale of a training recipe."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(factor)


def standardize_inputs(model: nn.Module, x: torch.Tensor) -> None:
    """Make the model standardise its inputs by the per-channel mean and deviation of `x` (its
    training data), through its InputNorm layer; an architecture without one cannot."""
    if hasattr(model, "input_norm") and model.input_norm is None:
        channels = x.shape[1]
        model.input_norm = InputNorm(channels).to(x.device)
    norms = [m for m in model.modules() if isinstance(m, InputNorm)]
    if len(norms) != 1:
        raise UsageError(f"preprocessing 'standardize' needs an architecture with an `input_norm` slot for an arena.models.InputNorm layer; {type(model).__name__} has none.")
    dims = [d for d in range(x.dim()) if d != 1]
    with torch.no_grad():
        norms[0].shift.copy_(x.double().mean(dim=dims).float())
        norms[0].scale.copy_(x.double().std(dim=dims).clamp_min(1e-6).float())


def _made(architecture: Architecture, make: Callable[[], Any]) -> nn.Module:
    """What a registered architecture builds, or a clear error naming it when it fails (a plugin's code)."""
    try:
        model = make()
    except Exception as exc:
        raise UsageError(f"architecture {architecture.name!r} (module {architecture.module}) failed to build a model: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"architecture {architecture.name!r} (module {architecture.module}) built a {type(model).__name__}, not a torch.nn.Module.")
    return model


def build_model(task: TaskSpec, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> nn.Module:
    """A fresh model of the task's architecture, on `device` (default: the host); initialised
    from `generator` when given. The weights are drawn on the host and then moved, so one
    generator gives the same initial weights on every device."""
    base, *wrappers = (ARCHITECTURES.get(name) for name in task.architecture.split("+"))
    if base.build is None:
        raise UsageError(f"architecture {base.name!r} is a wrapper; name the architecture it wraps first, as in 'badnets_cnn+{base.name}'.")
    model = _made(base, functools.partial(base.build, task))
    for wrapper in wrappers:
        if wrapper.wrap is None:
            raise UsageError(f"architecture {wrapper.name!r} is not a wrapper; in {task.architecture!r} only the first name may be a base architecture.")
        model = _made(wrapper, functools.partial(wrapper.wrap, model, task))
    if generator is not None:
        init_weights(model, generator)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack the keyword
    return model if device is None else model.to(device)
