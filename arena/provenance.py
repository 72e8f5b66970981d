"""Where a number came from: the numerics it was computed under and the code that computed it.

Reproducibility contract (docs: README "Reproducible numbers"): every stage that trains,
defends or evaluates runs inside `pinned()`, with exactly `STAGE_THREADS` torch threads,
whatever the machine's core count and whichever entry point runs it (`arena match`, a
tournament worker, a benchmark). Intra-op parallelism changes the order of floating-point
reductions, so two thread counts give two different models from one spec; one fixed count
gives bit-identical weights on the same torch build and CPU kernel set. Parallelism comes from
running stages side by side instead (one process per stage).

`numerics()` names what the bits depend on; two rows with different numerics may differ in
their last bits and are never compared as if they could not. `code_fingerprint` names the code
of a strategy, so results of code that has changed since are marked stale and re-run.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import platform
import subprocess
import sys
import types
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import arena
from arena.device import Compute, current, describe

STAGE_THREADS = 1


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """Run the block with the contract's torch thread count; the caller's count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(STAGE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def numerics(compute: Compute | None = None) -> dict[str, Any]:
    """What the bits of a result depend on besides the spec and the code: the torch build, the
    CPU kernels and thread count, and the job's device (arena.device.current() unless given):
    for a GPU its model, compute capability, CUDA and cuDNN versions; mixed precision when on.
    A CPU float32 record has exactly the fields it had before GPUs, so stored CPU models and rows
    stay current."""
    compute = compute or current()
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    return {
        "torch": torch.__version__,
        "device": compute.torch_device.type,
        "threads": STAGE_THREADS,
        "cpu_kernels": capability,  # the SIMD kernel set torch dispatches to (AVX2, AVX512, ...)
        "machine": platform.machine(),
        **describe(compute),
    }


def numerics_label(n: dict[str, Any] | None) -> str:
    """One short line naming a numerics record, for tables and messages."""
    if not n:
        return "unrecorded"
    if n.get("gpu"):
        label = f"torch {n.get('torch')} cuda {n.get('cuda')} on {n.get('gpu')} (sm {n.get('gpu_capability')}), deterministic"
    else:
        label = f"torch {n.get('torch')} {n.get('device')} {n.get('machine')}/{n.get('cpu_kernels')}, {n.get('threads')} thread(s)"
    if n.get("amp"):
        label += f", mixed precision {n['amp']}"
    others = [numerics_label(stage) for stage in n.get("attack_stages", []) if stage != {k: v for k, v in n.items() if k != "attack_stages"}]
    return label + (f" (models trained under {'; '.join(sorted(set(others)))})" if others else "")


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def _source_digest(path: str) -> str:
    """SHA-256 of the module's code with comments, docstrings and layout normalised away, so
    that documentation edits do not mark results stale; unparsable text is hashed as is."""
    text = Path(path).read_bytes()
    try:
        text = ast.unparse(_without_docstrings(ast.parse(text))).encode()
    except (SyntaxError, ValueError):
        pass
    return hashlib.sha256(text).hexdigest()[:16]


def strategy_modules(cls: type) -> list[str]:
    """The modules whose code a strategy class runs, within its own package: its module, the
    modules of its base classes, and the modules of what its module uses by name (a plugin's
    defense built on another module of its package). Built-ins share code only through arena's
    library modules (docs/design.md §2), so theirs is their own module alone."""
    package = strategy_package(cls.__module__)
    inside = lambda name: name.startswith(package + ".") or name == package  # noqa: E731
    names = {cls.__module__} | {base.__module__ for base in cls.__mro__ if inside(base.__module__)}
    module = sys.modules.get(cls.__module__)
    for value in vars(module).values() if module is not None else ():
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and inside(name) and name != package:
            names.add(name)
    return sorted(names)


def strategy_package(module: str) -> str:
    """The package a strategy module belongs to: `arena.attackers` / `arena.defenders` for the
    built-ins (arena's own library modules are not part of it), a plugin's top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "arena" and len(parts) > 2 else parts[0]


def code_fingerprint(cls: type) -> str:
    """The code a strategy class runs: the SHA-256 of the code of its `strategy_modules`
    (comments, docstrings and layout aside), or, where a source is not on disk, its
    distribution's name and version.

    Shared arena modules are not hashed here: a change in one moves `arena_version` and
    `git_commit` (recorded beside it) rather than marking every result in the world stale.
    """
    digests: list[str] = []
    for name in strategy_modules(cls):
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path or not Path(path).is_file():
            digests = []
            break
        digests.append(f"{name}:{_source_digest(path)}")
    if digests:
        return "src:" + (digests[0].split(":")[1] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16])
    top = cls.__module__.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        return f"dist:{dist}=={metadata.version(dist)}"
    return "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the arena source tree, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(arena.__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
