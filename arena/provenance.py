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
import inspect
import platform
import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import arena

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


def numerics() -> dict[str, Any]:
    """What the bits of a result depend on besides the spec and the code."""
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "unknown"
    return {
        "torch": torch.__version__,
        "device": "cpu",
        "threads": STAGE_THREADS,
        "cpu_kernels": capability,  # the SIMD kernel set torch dispatches to (AVX2, AVX512, ...)
        "machine": platform.machine(),
    }


def numerics_label(n: dict[str, Any] | None) -> str:
    """One short line naming a numerics record, for tables and messages."""
    if not n:
        return "unrecorded"
    return f"torch {n.get('torch')} {n.get('device')} {n.get('machine')}/{n.get('cpu_kernels')}, {n.get('threads')} thread(s)"


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


def code_fingerprint(cls: type) -> str:
    """The code a strategy class runs: the SHA-256 of its module's code (comments, docstrings and
    layout aside), or, where the source is not on disk, its distribution's name and version.

    Only the strategy's own module is hashed: a change in a shared arena module moves
    `arena_version`/`git_commit` (recorded beside it), not every strategy's fingerprint.
    """
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    if source and Path(source).is_file():
        return "src:" + _source_digest(source)
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
