"""The one training loop, the one inference helper, and freezing a model's weights. Attacks and
defenses call these."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from arena.protocol import ProgressFn, Split, no_progress

OPTIMIZERS = ("adam", "sgd", "adadelta")


def fit(
    model: nn.Module,
    data: Split,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    stage: str = "train",
    progress: ProgressFn = no_progress,
    after_step: Callable[[nn.Module], None] | None = None,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_params: Sequence[nn.Parameter] = (),
    sharpness_radius: float = 0.0,
    sharpness_adaptive: bool = False,
) -> nn.Module:
    """Minibatch training of `model` on `data` in place; data stays in tensors (no DataLoader).

    `after_step` runs after every optimiser step (attacks use it to hold constraints).
    `loss_fn(model, x, y)` replaces the cross-entropy of a batch (an attack that trains a trigger
    generator with the classifier builds its batch loss there), and `extra_params` are optimised
    with the model's (that generator's weights). `sharpness_radius` ρ > 0 makes each step a
    sharpness-aware one (Foret et al., "Sharpness-Aware Minimization", ICLR 2021): the gradient is
    taken again at the weights moved by ρ along the normalised gradient, and applied at the
    original weights, which seeks minima whose whole ρ-neighbourhood has low loss.
    `sharpness_adaptive` makes it adaptive SAM (Kwon et al., "ASAM", ICML 2021; FT-SAM's
    perturbation): each weight moves in proportion to its own magnitude, ε = ρ·w²·g / ‖|w|·g‖,
    so the ρ-neighbourhood is measured relative to the weights' scale.
    """
    params = [p for p in model.parameters() if p.requires_grad] + [p for p in extra_params if p.requires_grad]
    # on a GPU the step is one fused kernel (its own numerics, recorded as the GPU's); CPU keeps its loop
    on_gpu = bool(params) and params[0].device.type == "cuda"
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True) if on_gpu else torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        # (the keyword only where it is used: older torch releases' SGD lacks it)
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, fused=True) if on_gpu else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == "adadelta":  # Zeiler 2012; `lr` scales its step (1.0 in the paper)
        opt = torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    batch_loss = loss_fn if loss_fn is not None else _cross_entropy
    n = len(data)
    x = data.x.contiguous(memory_format=torch.channels_last) if data.x.dim() == 4 else data.x  # images, or features
    model.train()
    progress(stage, 0, epochs)
    for epoch in range(epochs):
        # drawn on the host generator (the same order on every device), moved once per epoch
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            xb, yb = x[idx], data.y[idx]
            batch_loss(model, xb, yb).backward()
            if sharpness_radius > 0:
                _ascend_to_sharpest(params, sharpness_radius, functools.partial(batch_loss, model, xb, yb), adaptive=sharpness_adaptive)
            opt.step()
            if after_step is not None:
                after_step(model)
        progress(stage, epoch + 1, epochs)
    model.eval()
    return model


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def _ascend_to_sharpest(params: list[nn.Parameter], radius: float, loss: Callable[[], torch.Tensor], adaptive: bool = False) -> None:
    """SAM's inner step: with the batch gradient in `.grad`, move the weights by `radius` along it
    (normalised over all of them), replace `.grad` by the gradient there, and move them back.
    Adaptive (ASAM): the gradient is scaled elementwise by |w| before the norm and by w² in the move."""
    with torch.no_grad():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        scaled = [g * p.abs() for g, p in zip(grads, params)] if adaptive else grads
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in scaled]))
        moves = [g * p.pow(2) * (radius / (norm + 1e-12)) for g, p in zip(grads, params)] if adaptive else [g * (radius / (norm + 1e-12)) for g in grads]
        for p, e in zip(params, moves):
            p.add_(e)
    for p in params:
        p.grad = None
    loss().backward()
    with torch.no_grad():
        for p, e in zip(params, moves):
            p.sub_(e)


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Model outputs for x in eval mode, in batches."""
    was_training = model.training
    model.eval()
    out = [model(x[i : i + batch_size].contiguous(memory_format=torch.channels_last)) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=x.device)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's weights live (the job's device, for every model the harness hands out)."""
    return next(model.parameters()).device


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return logits(model, x).argmax(dim=1)


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data.x) == data.y).float().mean()) if len(data) else math.nan


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with its weights out of autograd, for optimising something else
    against it (inputs, triggers, a generator); each weight's `requires_grad` and the training
    mode are restored on exit, also when the body raises. Used by model inversion
    (arena/inversion.py), Neural Cleanse's trigger search, DeepInspect's generator, TrojanNN's
    trigger generation and retraining (with `trainable`) and the clean-label attack's PGD.
    Eval mode changes no numerics of arena.models' architectures (no dropout, no batch norm)."""
    was_training, grads = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        model.train(was_training)


@contextmanager
def trainable(*modules: nn.Module) -> Iterator[None]:
    """The weights of `modules` back in autograd for the body, inside `frozen` (a partial retrain:
    `fit` optimises only weights that require gradients); each one's `requires_grad` is restored
    on exit, also when the body raises."""
    params = [p for m in modules for p in m.parameters()]
    grads = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, g in zip(params, grads):
            p.requires_grad_(g)
