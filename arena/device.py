"""Where a job computes: one device choice for a whole job, its numerics settings, and the check
that a strategy keeps its tensors on the device its context hands it (docs/design.md §11).

- `resolve("auto" | "cpu" | "cuda", amp)` turns the user's choice into a `Compute`; `auto` is a
  GPU when this process sees one. Asking for CUDA where there is none is a clear error.
- `using(compute)` runs a stage under that choice: on CUDA with deterministic algorithms, cuDNN
  autotuning off and TF32 off (so a GPU model is reproducible from its spec and its float32 maths
  is the CPU's float32 maths, not TF32), and with bfloat16 autocast when mixed precision is
  asked for. CPU settings are left exactly as they were: published CPU numbers stay bit-identical.
- Randomness stays on the CPU: every generator a strategy gets is a CPU `torch.Generator`, and
  strategies draw on it and move the draw to `ctx.device`. The same spec then draws the same
  numbers on every device, so a GPU match differs from its CPU twin only by floating-point
  rounding, never by its random stream.
- `DeviceGuard` is the contract check's fake device: on a machine without a GPU it runs a
  strategy as if its device were another one, and fails the first operation that mixes a tensor
  the strategy created on the host with the device tensors it was given, which on a real GPU is
  a crash (`arena check` uses it; tests/test_device.py shows it catching a planted mistake).
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from arena.errors import StrategyError, UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_DTYPE = torch.bfloat16  # bfloat16 needs no loss scaling, so one training loop serves both settings


class DeviceError(UsageError):
    """A device choice this machine or cluster cannot honour."""


@dataclass(frozen=True)
class Compute:
    """A job's device ("cpu" or "cuda") and whether it trains and infers in mixed precision."""

    device: str = "cpu"
    amp: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "amp": self.amp}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Compute:
        return cls(str(data.get("device", "cpu")), bool(data.get("amp", False)))


CPU = Compute()


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def resolve(choice: str = "auto", amp: bool = False) -> Compute:
    """The job's `Compute` for a user's `--device` choice, checked against this process."""
    if choice not in DEVICE_CHOICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}.")
    if choice == "cuda" and not cuda_available():
        raise DeviceError(
            "--device cuda was asked for, but torch sees no CUDA device here "
            f"(torch {torch.__version__}, built {'with CUDA ' + str(torch.version.cuda) if torch.version.cuda else 'without CUDA'}). "
            "Use --device cpu, or --device auto to take a GPU only where there is one."
        )
    device = "cuda" if choice == "cuda" or (choice == "auto" and cuda_available()) else "cpu"
    return Compute(device, amp)


_current: ContextVar[Compute] = ContextVar("arena_compute", default=CPU)


def current() -> Compute:
    """The Compute of the stage running in this context (CPU float32 outside any `using`)."""
    return _current.get()


@contextlib.contextmanager
def using(compute: Compute) -> Iterator[Compute]:
    """Run the block under `compute`: its device, its determinism settings, its precision.
    Global torch flags touched here are restored on exit."""
    token = _current.set(compute)
    restore: list[Any] = []
    try:
        with contextlib.ExitStack() as stack:
            if compute.device.startswith("cuda"):
                # cuBLAS reads this when its handle is made: set before the job's first matmul
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                restore = [
                    torch.are_deterministic_algorithms_enabled(),
                    torch.backends.cudnn.deterministic,
                    torch.backends.cudnn.benchmark,
                    torch.backends.cuda.matmul.allow_tf32,
                    torch.backends.cudnn.allow_tf32,
                ]
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
            if compute.amp:
                # no cast cache: the whole stage is one autocast region, and a cached low-precision
                # copy of a weight would outlive the optimiser steps that change the weight
                stack.enter_context(torch.autocast(device_type=compute.torch_device.type, dtype=AMP_DTYPE, cache_enabled=False))
            yield compute
    finally:
        if restore:
            torch.use_deterministic_algorithms(restore[0])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = restore[1], restore[2]
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = restore[3], restore[4]
        _current.reset(token)


def describe(compute: Compute) -> dict[str, Any]:
    """The device part of a numerics record (arena.provenance.numerics): empty for CPU float32,
    which the CPU fields already name, so CPU records are what they were before GPUs."""
    out: dict[str, Any] = {}
    if compute.device.startswith("cuda"):
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        out.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_capability=f"{major}.{minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            deterministic=True,
            tf32=False,
        )
    if compute.amp:
        out["amp"] = str(AMP_DTYPE).removeprefix("torch.")
    return out


def numerics_class(n: dict[str, Any] | None) -> str:
    """The coarse numerics a stored model or a result row was computed under: "cpu", "cuda", with
    "+amp" for mixed precision. Models and rows of one class are reused by a job of that class
    only: a GPU job never takes a CPU-trained model or a CPU row as its own, nor the reverse."""
    n = n or {}
    return ("cuda" if n.get("device") == "cuda" or n.get("gpu") else "cpu") + ("+amp" if n.get("amp") else "")


def compute_class(compute: Compute) -> str:
    """The numerics class a job of `compute` writes (see `numerics_class`)."""
    return numerics_class({"device": compute.torch_device.type, "amp": compute.amp})


def store_key(key: str, compute: Compute) -> str:
    """The artifact-store key of a model of spec key `key` trained under `compute`: the spec key
    itself on CPU float32 (so every stored and published CPU model keeps its key), suffixed by the
    numerics class otherwise, so models of two classes sit side by side and neither replaces the other."""
    cls = compute_class(compute)
    return key if cls == "cpu" else f"{key}.{cls.replace('+', '-')}"


def cluster_gpus() -> float:
    """GPUs of the running Ray cluster (0 where it has none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def valid_gpu_share(share: float) -> bool:
    """A GPU share a Ray task can hold: 0 (none), a fraction of one card, or whole cards."""
    return math.isfinite(share) and share >= 0 and (share <= 1 or share == int(share))


def ray_compute(choice: str, amp: bool, gpus_per_task: float, cluster: float = math.inf) -> Compute:
    """The one Compute of a Ray job (a tournament, the oracle's matches and trials): a task
    computes where its resources put it, on its share of a GPU when it asks for one, else on CPUs
    (Ray hides the GPUs from tasks that ask for none). Every contradiction is a DeviceError, before
    anything is scheduled; `cluster` is the cluster's GPU count once Ray is up."""
    if choice not in DEVICE_CHOICES:
        resolve(choice, amp)  # its error
    check_gpus_per_task(gpus_per_task, choice, cluster)
    return Compute("cuda" if gpus_per_task > 0 else "cpu", amp)


def check_gpus_per_task(gpus_per_task: float, compute_choice: str, cluster: float) -> None:
    """A Ray job's GPU request against its cluster and its `--device`, before anything is scheduled."""
    if not valid_gpu_share(gpus_per_task):
        raise DeviceError(f"--gpus-per-task must be a fraction in (0, 1] or a whole number of GPUs, got {gpus_per_task:g}.")
    if compute_choice == "cpu" and gpus_per_task > 0:
        raise DeviceError(f"--device cpu with --gpus-per-task {gpus_per_task:g} would hold GPUs and never use them; drop one of the two.")
    if gpus_per_task > 0 and cluster == 0:
        raise DeviceError(
            f"--gpus-per-task {gpus_per_task:g} asks for GPUs, but the Ray cluster has none (its resources list no 'GPU'). "
            "Drop --gpus-per-task (or gpus_per_task in the suite) to play on CPUs, or attach to a cluster with GPUs (--address)."
        )
    if gpus_per_task > cluster > 0:
        raise DeviceError(f"--gpus-per-task {gpus_per_task:g} is more than the cluster's {cluster:g} GPUs: no match could ever be scheduled.")
    if compute_choice == "cuda" and gpus_per_task == 0:
        raise DeviceError("--device cuda in a tournament needs GPUs for its workers: give --gpus-per-task (e.g. 0.25 packs four matches per card).")


# ---------------------------------------------------------------------------------------------
# The fake device of the contract check


# Functions that make a new tensor on the default device (the host) unless given `device=`.
_FACTORIES = frozenset(
    getattr(torch, name)
    for name in (
        "zeros ones empty full rand randn randint randperm tensor as_tensor arange linspace logspace eye "
        "from_numpy normal bernoulli multinomial poisson scalar_tensor empty_strided"
    ).split()
    if hasattr(torch, name)
)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) argument list."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _storage_ptr(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # a tensor without storage
        return -1


class DeviceGuard(TorchFunctionMode):
    """Runs code on the host as if its device were another one.

    The tensors `adopt`ed when the guard starts (the model, the data the context hands over) are
    the device's, and so is whatever is computed from a device tensor, made with `device=`, or
    moved with `.to(device)`. Any other tensor is the host's: one a factory made without
    `device=`, or the parameters of a module built and never moved. An operation that takes a
    host tensor (of one element or more dimensions: CUDA accepts host scalars, and host index
    tensors for indexing) together with device tensors, or a random draw made on the device from
    a CPU generator, raises StrategyError naming the operation: on a GPU it would fail there."""

    def __init__(self, who: str) -> None:
        super().__init__()
        self.who = who
        self._device: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        # by storage too: torch makes some tensors out of sight of a function mode (a Parameter
        # built around a copied tensor, as deepcopy does), and those share their data's storage.
        # An address stays marked until a host tensor is seen there (the allocator reuses memory).
        self._storage: set[int] = set()

    def adopt(self, *values: Any, storage: bool = True) -> None:
        """Mark tensors, modules' weights and splits as living on the device (`storage`: and
        every tensor on their storage)."""
        for value in values:
            if isinstance(value, torch.nn.Module):
                self.adopt(*value.parameters(), *value.buffers(), storage=storage)
            elif hasattr(value, "x") and hasattr(value, "y"):  # a Split
                self.adopt(value.x, value.y, storage=storage)
            else:
                for t in _tensors(value):
                    self._device[id(t)] = t
                    if storage:
                        self._storage.add(_storage_ptr(t))

    def _host(self, value: Any) -> None:
        for t in _tensors(value):
            self._storage.discard(_storage_ptr(t))

    def on_device(self, t: torch.Tensor) -> bool:
        return self._device.get(id(t)) is t or _storage_ptr(t) in self._storage

    def _fail(self, func: Any, what: str) -> None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        raise StrategyError(
            f"{self.who} {what} in {name}: on a GPU this is a device mismatch. Create tensors on ctx.device "
            "(or move them there with .to(ctx.device)); draw random numbers on the context's CPU generator and move the draw."
        )

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES:
            result = func(*args, **kwargs)
            if kwargs.get("device") is not None:
                generator = kwargs.get("generator")
                if generator is not None and generator.device.type == "cpu":
                    self._fail(func, "draws random numbers on the device from a CPU generator")
                self.adopt(result)
            else:
                self._host(result)
            return result
        if func is torch.Tensor.cpu:  # back to the host: a copy on a GPU, so one here, the host's
            result = func(*args, **kwargs)
            result = result.clone() if result is args[0] else result
            self._host(result)  # the copy may sit where a freed device tensor's storage was
            return result
        if func is torch._has_compatible_shallow_copy_type:  # no arithmetic: nothing to check
            return func(*args, **kwargs)
        if func is torch.Tensor.__deepcopy__:  # a copy lives where its original does (its memo is not an operand)
            result = func(*args, **kwargs)
            if self.on_device(args[0]):
                self.adopt(result)
            else:
                self._host(result)
            return result
        if func is torch.Tensor.to or func is torch.Tensor.cuda:
            result = func(*args, **kwargs)
            named = [a for a in list(args[1:]) + [kwargs.get("device")] if a is not None]
            moved = func is torch.Tensor.cuda or any(isinstance(a, (str, torch.device)) for a in named)
            follows = [a for a in named if isinstance(a, torch.Tensor)]
            if moved or (follows and self.on_device(follows[0])) or (not follows and self.on_device(args[0])):
                if result is args[0] and not self.on_device(result):
                    # host to "device" is no copy here, but it is one on a GPU: make it, so that
                    # the original stays the host's (clone keeps the strides, hence the numerics)
                    result = result.clone()
                self.adopt(result)
            elif result is not args[0]:  # a new host tensor, perhaps where a freed device one was
                self._host(result)
            return result
        if getattr(func, "__name__", "") == "__set__":  # `t.data = v`, `t.grad = v`: t takes v's place
            result = func(*args, **kwargs)
            if len(args) > 1 and isinstance(args[1], torch.Tensor) and self.on_device(args[1]):
                self.adopt(args[0], storage=False)
            return result
        inputs = _tensors(args) + _tensors(kwargs)
        if func is torch.Tensor.__getitem__ or func is torch.Tensor.__setitem__:
            indexed, index = args[0], _tensors(args[1])
            if not self.on_device(indexed) and any(self.on_device(i) and i.dim() > 0 for i in index):
                self._fail(func, "indexes a host tensor with device indices")
            inputs = [indexed] + _tensors(args[2:])
        sized = [t for t in inputs if t.dim() > 0 and t.numel() > 0]
        device = [t for t in inputs if self.on_device(t)]
        host = [t for t in sized if not self.on_device(t)]
        if device and host:
            self._fail(func, f"mixes a tensor made on the host (shape {tuple(host[0].shape)}) with device tensors")
        result = func(*args, **kwargs)
        if device:
            self.adopt(result)
        else:
            self._host(result)
        return result
