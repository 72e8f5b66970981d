"""Strategies run sandboxed: a worker process per stage that gets its row of the threat model as
data and returns its outcome as data (docs/design.md §1, "The sandbox").

The driver (the evaluator's process) starts one worker per attack or defense stage:

- **What goes in.** A frame of JSON plus tensors (safetensors, never pickle): the strategy to
  import (module and class name, as the driver's registry resolved it), its parameters, the task
  spec, a seed, and its split; a defender also gets the published weights (the exact stored
  bytes, with their SHA-256 so it may verify them) and the architecture to rebuild them into.
- **What comes out.** An attacker returns weights (safetensors) and its triggers' JSON forms; a
  defender returns a verdict, repaired weights or neither, and whether it has an input filter.
  The driver validates every byte: weights must load strictly into the architecture the driver
  builds, a verdict must be a flag, a finite score and labels of the task, a filter's answers one
  boolean per input. Nothing the worker sends is unpickled or executed.
- **The filter stays in the worker.** The evaluator asks it about batches (`Sandbox.ask_filter`);
  each batch is answered by a fresh `fork` of the worker as it was when `run` returned, so a
  filter cannot carry anything from one batch to the next (on a GPU, where CUDA forbids a fork,
  the worker answers itself, and only the evaluator's consistency check guards against state).
- **What the worker cannot reach** (`bwrap` mode, Linux with bubblewrap): no network (every
  namespace unshared), no `$ARENA_HOME` (the store, the results database, the HMAC key, other
  matches' files), no dataset files (the digits copy inside scikit-learn, the Debian
  Fashion-MNIST folder, `ARENA_DATA_DIR`), an empty environment, its own process tree, a private
  scratch `/tmp`; only the Python installation and the modules it imports are bound, read-only.
  CPU time and address space are capped by rlimits, wall time by the driver, which kills it.
- **The weaker mode** (`process`, where bubblewrap is missing): the same process boundary,
  protocol, empty environment, private working directory and limits, but the file system and the
  network are the user's. `arena doctor` says which mode is in force; `ARENA_SANDBOX=bwrap`
  makes the missing sandbox an error instead.

The worker also keeps a log of what the strategy reached for (an audit hook: files opened
outside the Python installation, directory listings, sockets, subprocesses, `gc` walks, frame
inspection from the strategy's own code); `arena check` reports it. The log is the strategy's
own process's word, so it informs, it does not protect: the boundary is what protects.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from arena.errors import ArenaError, StrategyError, UsageError
from arena.protocol import InputFilter

MODES = ("auto", "bwrap", "process")
MAGIC = b"ARSB"
MAX_HEADER_BYTES = 4 << 20
MAX_PAYLOAD_BYTES = 8 << 30
GIB = 1 << 30


class SandboxError(ArenaError):
    """The sandbox cannot be used as asked (bubblewrap required but missing, a bad mode)."""


class SandboxedFailure(StrategyError):
    """The strategy's worker failed: it raised, died, broke the protocol or ran past a limit."""


class SandboxTimeout(StrategyError, TimeoutError):
    """The worker ran past its wall-clock limit and was killed."""


# ---------------------------------------------------------------------------------------------
# Limits and the mode


@dataclass(frozen=True)
class SandboxLimits:
    """What one worker may use: CPU seconds and address space (rlimits, enforced by the kernel)
    and wall seconds (the driver kills it). The defaults are generous for a Fashion-MNIST stage
    on one thread; a tournament passes its suite's time limits."""

    cpu_seconds: float = 4 * 3600.0
    memory_bytes: int = 16 * GIB
    wall_seconds: float = 4 * 3600.0

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"sandbox limit {name} must be a positive finite number of seconds, got {value!r}.")
        if not (isinstance(self.memory_bytes, int) and self.memory_bytes >= 512 << 20):
            raise UsageError(f"sandbox limit memory_bytes must be at least 512 MiB, got {self.memory_bytes!r}.")


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


@lru_cache(maxsize=1)
def _bwrap_works() -> tuple[bool, str]:
    """Whether bubblewrap can make a sandbox here (it needs unprivileged user namespaces, or root)."""
    path = _bwrap_path()
    if path is None:
        return False, "bubblewrap (bwrap) is not installed; on Debian/Ubuntu: apt-get install bubblewrap"
    try:
        probe = subprocess.run([path, *_system_binds(), "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--proc", "/proc", "--dev", "/dev", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{path} could not be run ({exc})"
    if probe.returncode != 0:
        return False, f"{path} cannot create a sandbox here: {probe.stderr.decode(errors='replace').strip() or f'exit code {probe.returncode}'}"
    return True, f"{path}: network, processes, IPC and the file system isolated"


def sandbox_mode() -> str:
    """The mode in force: `bwrap` where bubblewrap works (or is required by ARENA_SANDBOX=bwrap),
    else `process`. ARENA_SANDBOX is read from the driver's environment only."""
    asked = os.environ.get("ARENA_SANDBOX", "auto").strip().lower() or "auto"
    if asked not in MODES:
        raise UsageError(f"ARENA_SANDBOX must be one of {', '.join(MODES)}, got {asked!r}.")
    works, why = _bwrap_works()
    if asked == "bwrap" and not works:
        raise SandboxError(f"ARENA_SANDBOX=bwrap asks for the bubblewrap sandbox, but {why}.")
    if asked == "process":
        return "process"
    return "bwrap" if works else "process"


def doctor() -> dict[str, Any]:
    """What `arena doctor` shows about the sandbox."""
    works, why = _bwrap_works()
    mode = sandbox_mode()
    return {
        "mode": mode,
        "asked": os.environ.get("ARENA_SANDBOX", "auto") or "auto",
        "bwrap": why,
        "guarantees": (
            "strategies run without network, without ARENA_HOME, datasets or other matches' files, with an empty environment and their own scratch"
            if mode == "bwrap"
            else "strategies run in their own process with an empty environment and limits, but can read and write the user's files and reach the network: "
            "install bubblewrap for the full sandbox"
        ),
    }


# ---------------------------------------------------------------------------------------------
# The wire: frames of JSON and safetensors


def write_frame(out: IO[bytes], header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    head = json.dumps(header).encode()
    body = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}) if tensors else b""
    out.write(MAGIC + struct.pack("<QQ", len(head), len(body)) + head + body)
    out.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            raise EOFError(f"the stream ended {left} bytes early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One frame; malformed input is a ValueError (the caller says whose)."""
    prefix = _read_exact(stream, 4 + 16)
    if prefix[:4] != MAGIC:
        raise ValueError("a frame without the protocol's magic bytes")
    head_len, body_len = struct.unpack("<QQ", prefix[4:])
    if head_len > MAX_HEADER_BYTES or body_len > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a frame of {head_len} + {body_len} bytes, over the protocol's limits")
    header = json.loads(_read_exact(stream, head_len))
    if not isinstance(header, dict):
        raise ValueError("a frame whose header is not a JSON object")
    body = _read_exact(stream, body_len) if body_len else b""
    return header, (st_load(body) if body else {})


# ---------------------------------------------------------------------------------------------
# What the worker imports, and the paths it may read


@dataclass(frozen=True)
class StrategyRef:
    """How the worker finds a strategy class: its module (or file) and qualified name, as the
    driver's registry resolved it. The worker imports nothing the driver did not name."""

    kind: str  # "attacker" or "defender"
    name: str
    module: str
    qualname: str
    file: str | None = None  # a strategy loaded from a file (`arena check path.py:Class`)

    @classmethod
    def of(cls, strategy: type, kind: str) -> StrategyRef:
        qualname = strategy.__qualname__
        if "<locals>" in qualname:
            raise UsageError(
                f"{kind} class {qualname} is defined inside a function; the sandbox imports a strategy by its module and name, so define it at module level."
            )
        module = sys.modules.get(strategy.__module__)
        file = getattr(module, "__file__", None)
        from_file = strategy.__module__.startswith("arena_check_")  # arena.contract.load_strategy's file modules
        return cls(kind, str(getattr(strategy, "name", qualname)), strategy.__module__, qualname, file if from_file else None)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "module": self.module, "qualname": self.qualname, "file": self.file}

    def source_paths(self) -> list[Path]:
        """What the worker must be able to read to import it: the module's file or package folder."""
        if self.file:
            return [Path(self.file).resolve().parent]
        top = self.module.split(".")[0]
        module = sys.modules.get(top)
        if module is None:  # not imported here (a plugin probed before its first import): located, not run
            spec = importlib.util.find_spec(top)
            if spec is None:
                return []
            return [Path(p) for p in spec.submodule_search_locations or []] or ([Path(spec.origin).parent] if spec.origin else [])
        paths = [Path(p) for p in getattr(module, "__path__", [])] or ([Path(str(module.__file__)).parent] if getattr(module, "__file__", None) else [])
        if self.module != top and (inner := sys.modules.get(self.module)) is not None and getattr(inner, "__file__", None):
            paths.append(Path(str(inner.__file__)).parent)  # an editable install can map a subpackage elsewhere
        return paths


def _system_binds() -> list[str]:
    """The system folders every worker needs, read-only (symlinked where the system symlinks them)."""
    args: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime"):
        if os.path.exists(etc):
            args += ["--ro-bind", etc, etc]
    return args


def _secret_paths() -> list[Path]:
    """What a worker must never read even where it lies under a bound folder: the state home and
    every dataset folder arena knows (the test split is the evaluator's)."""
    from arena.data import DEBIAN_FASHION_DIR
    from arena.store import arena_home

    paths = [arena_home(), DEBIAN_FASHION_DIR.parent]
    if os.environ.get("ARENA_DATA_DIR"):
        paths.append(Path(os.environ["ARENA_DATA_DIR"]).expanduser())
    with contextlib.suppress(ImportError):
        import sklearn.datasets

        paths.append(Path(sklearn.datasets.__file__).parent / "data")  # digits ships here
    return [p.resolve() for p in paths]


def _python_paths() -> list[Path]:
    """The interpreter, its libraries and the installed packages (never the working directory,
    which may hold anything)."""
    cwd = Path.cwd().resolve()
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent}
    for entry in sys.path:
        if entry and Path(entry).resolve() != cwd and os.path.exists(entry):
            paths.add(Path(entry))
    import arena

    for package in ("arena", "arena.attackers", "arena.defenders"):
        module = sys.modules.get(package) or importlib.import_module(package)
        paths.update(Path(p) for p in getattr(module, "__path__", []))
    del arena
    return sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def bwrap_command(extra_paths: list[Path], cuda: bool = False) -> list[str]:
    """The bubblewrap command line of one worker (without the program to run)."""
    path = _bwrap_path()
    assert path is not None
    binds = sorted({p.resolve() for p in [*_python_paths(), *extra_paths] if p.exists()}, key=lambda p: len(p.parts))
    secrets = _secret_paths()
    # the scratch /tmp first: a folder bound below it later (a file's strategy) stays visible
    # no capabilities: run as root, bubblewrap would keep them, and a worker could unmount what hides a secret
    args = [path, "--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/tmp/home", *_system_binds()]
    for bind in binds:
        if not _within(bind, secrets):  # a module inside the state home is not imported from there
            args += ["--ro-bind", str(bind), str(bind)]
    for secret in secrets:  # every one, also under the system folders (/usr/share/datasets)
        if secret.is_dir():
            args += ["--tmpfs", str(secret)]  # hidden under an empty folder
        elif secret.exists():
            args += ["--ro-bind", "/dev/null", str(secret)]
    args += ["--chdir", "/tmp"]
    if cuda:  # the job's GPU: its device nodes, and the driver's view of the hardware (CUDA and NVML read /sys)
        for node in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(node), str(node)]
        args += ["--ro-bind", "/sys", "/sys"]
    return args


def worker_environment(home: str) -> dict[str, str]:
    """The whole environment a worker gets: nothing of the user's (no ARENA_HOME, no tokens)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **({"OPENBLAS_CORETYPE": os.environ["OPENBLAS_CORETYPE"]} if "OPENBLAS_CORETYPE" in os.environ else {}),  # older OpenBLAS miscomputes without it here
        **({"OPENBLAS_L2_SIZE": os.environ["OPENBLAS_L2_SIZE"]} if "OPENBLAS_L2_SIZE" in os.environ else {}),
        # the GPU a Ray task was given: without it the worker would take the machine's first
        **({"CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]} if "CUDA_VISIBLE_DEVICES" in os.environ else {}),
    }


def _limit_child(limits: SandboxLimits, cuda: bool) -> Callable[[], None]:
    # imported and loaded here, before the fork: between fork and exec a multithreaded parent's
    # child may take no lock an import or a dlopen could need
    import ctypes
    import resource

    libc = ctypes.CDLL(None, use_errno=True)

    def apply() -> None:
        cpu = int(math.ceil(limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU at the soft limit, SIGKILL at the hard
        if not cuda:  # CUDA maps far more address space than it uses
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()  # its own process group: the driver kills the whole tree
        with contextlib.suppress(OSError, AttributeError):  # and it dies with the driver (a Ray task killed at its deadline)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return apply


# ---------------------------------------------------------------------------------------------
# The driver's side


@dataclass
class Reply:
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class Sandbox:
    """One worker process, used as a context manager; requests go one at a time."""

    def __init__(self, ref: StrategyRef, limits: SandboxLimits | None = None, compute: Any = None) -> None:
        self.ref = ref
        self.limits = limits or SandboxLimits()
        self.mode = sandbox_mode()
        self.who = f"{ref.kind} {ref.name!r}"
        self.cuda = bool(compute is not None and getattr(compute, "device", "cpu").startswith("cuda"))
        self._scratch = Path(tempfile.mkdtemp(prefix="arena-sandbox-"))
        paths = ref.source_paths()
        program = [sys.executable, "-m", "arena.sandbox"]
        if self.mode == "bwrap":
            command = [*bwrap_command(paths, self.cuda), *program]
            env = worker_environment("/tmp/home")
            cwd = None
        else:
            (self._scratch / "home").mkdir()
            command, env, cwd = program, worker_environment(str(self._scratch / "home")), str(self._scratch)
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env, cwd=cwd, preexec_fn=_limit_child(self.limits, self.cuda)
            )
        except OSError as exc:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise SandboxError(f"could not start the sandbox for {self.who}: {exc}") from None
        self._deadline = time.monotonic() + self.limits.wall_seconds
        self._killed_for_time = False
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()
        sys_path = [p for p in sys.path if p and os.path.isdir(p)]
        self.seconds_last = 0.0
        try:
            self._send({"op": "hello", "sys_path": sys_path, "strategy": ref.to_dict()})
            self._expect("ready")
        except BaseException:  # an import that failed, a worker that died: nothing is left running
            self.close()
            raise

    def set_deadline(self, seconds: float) -> None:
        """Kill the worker `seconds` from now unless it is closed first (a request's own budget)."""
        self._deadline = time.monotonic() + seconds
        self.limits = SandboxLimits(self.limits.cpu_seconds, self.limits.memory_bytes, seconds)

    def _watch(self) -> None:
        while self.process.poll() is None:
            if time.monotonic() > self._deadline:
                self._killed_for_time = True
                self.kill()
                return
            time.sleep(0.2)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._send({"op": "close"})
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()  # whatever it started goes with it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _send(self, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        assert self.process.stdin is not None
        try:
            write_frame(self.process.stdin, header, tensors)
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _died(self) -> BaseException:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait()
        if self.mode == "bwrap" and 128 < code < 128 + 65:
            code = 128 - code  # bubblewrap reports its child's death by signal as 128 + the signal
        if self._killed_for_time:
            return SandboxTimeout(f"{self.who} ran past its wall-clock limit of {self.limits.wall_seconds:g} s and was killed")
        if code == -signal.SIGXCPU:
            return SandboxTimeout(f"{self.who} ran past its CPU-time limit of {self.limits.cpu_seconds:g} s and was killed")
        try:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        except ValueError:  # a number that names no signal
            how = f"signal {-code}"
        return SandboxedFailure(
            f"{self.who} stopped before answering ({how}); its stderr, above, may say why. A worker is killed so when it ignores its CPU-time limit "
            f"({self.limits.cpu_seconds:g} s) or exhausts its {self.limits.memory_bytes / GIB:g} GiB of address space."
        )

    def _expect(self, op: str, progress: Callable[[str, int, int], None] | None = None) -> Reply:
        assert self.process.stdout is not None
        while True:
            try:
                header, tensors = read_frame(self.process.stdout)
            except EOFError:
                raise self._died() from None
            except Exception as exc:  # a bad frame: malformed JSON, safetensors or lengths
                self.kill()
                raise SandboxedFailure(f"{self.who} broke the sandbox protocol ({type(exc).__name__}: {str(exc)[:200]}); refused.") from None
            kind = header.get("op")
            if kind == "progress" and progress is not None:
                stage, done, total = header.get("stage"), header.get("done"), header.get("total")
                if isinstance(stage, str) and isinstance(done, int) and isinstance(total, int):
                    progress(stage[:200], done, total)
                continue
            if kind == "progress":
                continue
            if kind == "error":
                raise _error_from(header, self.who)
            if kind != op:
                self.kill()
                raise SandboxedFailure(f"{self.who} answered {str(kind)[:40]!r} where {op!r} was due; refused.")
            return Reply(header, tensors)

    def request(self, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None, answer: str, progress: Callable[[str, int, int], None] | None = None) -> Reply:
        self._send(header, tensors)
        return self._expect(answer, progress)

    def ask_filter(self, x: torch.Tensor) -> torch.Tensor:
        """The filter's answers about one batch, from the worker as its `run` left it."""
        accepted = self.request({"op": "filter"}, {"x": x}, "answer").tensors.get("answer")
        if not isinstance(accepted, torch.Tensor) or accepted.dtype != torch.bool or tuple(accepted.shape) != (len(x),):
            raise SandboxedFailure(f"{self.who}'s input filter answered {_described(accepted)} for a batch of {len(x)} inputs; it must answer one boolean per input.")
        return accepted.to(x.device)

    def ask_predictions(self, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """A served repaired model's labels for one batch, from the worker as its `run` left it."""
        labels = self.request({"op": "predict"}, {"x": x}, "answer").tensors.get("answer")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (len(x),) or (len(x) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes):
            raise SandboxedFailure(f"{self.who}'s repaired model answered {_described(labels)} for a batch of {len(x)} inputs; it must answer one label of the task per input.")
        return labels.to(x.device)

    def attack(self, attacker: Any, task: Any, data: Any, seed: int, compute: Any, progress: Callable[[str, int, int], None] | None = None, device_guard: bool = False) -> Reply:
        """Run the attacker on its split; the reply's tensors are the published weights, its
        header the triggers' JSON forms (validated by the caller, who rebuilds them)."""
        header = {"op": "attack", "name": attacker.name, "version": attacker.version, "params": attacker.params, "task": task.to_dict()}
        header.update(seed=int(seed), compute=compute.to_dict(), device_guard=device_guard)
        reply = self.request(header, {"x": data.x, "y": data.y}, "attacked", progress)
        if not isinstance(reply.header.get("triggers"), list):
            raise SandboxedFailure(f"{self.who} returned no trigger list; refused.")
        return reply

    def defend(
        self,
        defender: Any,
        task: Any,
        weights: bytes,
        sha256: str,
        published_architecture: str,
        origins: list[dict[str, Any]],
        clean: Any,
        seed: int,
        compute: Any,
        progress: Callable[[str, int, int], None] | None = None,
        device_guard: bool = False,
    ) -> Reply:
        """Hand the defender the published weights (the stored bytes) and its clean split."""
        header = {
            "op": "defend",
            "name": defender.name,
            "version": defender.version,
            "params": defender.params,
            "task": task.to_dict(),
            "seed": int(seed),
            "compute": compute.to_dict(),
            "sha256": sha256,
            "published_architecture": published_architecture,
            "origins": origins,
            "device_guard": device_guard,
        }
        tensors = {"weights": torch.frombuffer(bytearray(weights), dtype=torch.uint8), "clean_x": clean.x, "clean_y": clean.y}
        return self.request(header, tensors, "defended", progress)

    def attempts(self) -> list[dict[str, Any]]:
        """The worker's log of what the strategy reached for (see the module docstring)."""
        reply = self.request({"op": "attempts"}, None, "attempts")
        found = reply.header.get("attempts")
        return [a for a in found if isinstance(a, dict)][:500] if isinstance(found, list) else []


def _described(value: Any) -> str:
    return f"a {value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else "nothing"


class SandboxedFilter(InputFilter):
    """A defender's input filter as the evaluator holds it: a handle on the worker, which alone
    runs the filter's code. `accept` ignores the model it is passed: the worker judges with the
    model its defense deployed (the repaired one, or the published one it was given)."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box

    def accept(self, model: Any, x: torch.Tensor) -> torch.Tensor:
        return self.box.ask_filter(x)


def verdict_from(data: Any, num_classes: int, who: str) -> Any:
    """A worker's verdict record, checked: a flag, a number, labels of the task; else refused."""
    from arena.protocol import Verdict

    if data is None:
        return None
    flagged, score, labels = (data.get("flagged"), data.get("score"), data.get("labels", [])) if isinstance(data, dict) else (None, math.nan, None)
    good = (
        isinstance(flagged, bool)
        and isinstance(score, (int, float))
        and not isinstance(score, bool)
        and _finite(score)
        and isinstance(labels, list)
        and len(labels) <= num_classes
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < num_classes for v in labels)
    )
    if not good:
        raise SandboxedFailure(f"{who} returned a verdict {str(data)[:200]} that is not a flag, a number and labels of the task (0..{num_classes - 1}); refused.")
    return Verdict(bool(flagged), float(score or 0.0), tuple(int(v) for v in labels or []))


_PROBED: dict[tuple[str, str, str, float], str | None] = {}


def probe_entry_point(kind: str, name: str, module: str, attr: str) -> str | None:
    """Import a plugin strategy's module in a worker before this process imports it: a module
    that exits, crashes, hangs or raises on import is reported (the reason), not imported. One
    probe per module file version and process. A module that behaves in the sandbox and not out
    of it is not caught here (docs/design.md §1, what remains)."""
    spec = importlib.util.find_spec(module.split(".")[0])
    origin = spec.origin if spec is not None and spec.origin else ""
    # keyed by where the module was found: a failure to find it (the plugin's folder not yet on
    # the path) must not stand for the module once it is there
    key = (module, attr, origin, os.path.getmtime(origin) if origin and os.path.exists(origin) else 0.0)
    if key not in _PROBED:
        try:
            with Sandbox(StrategyRef(kind, name, module, attr or name), SandboxLimits(wall_seconds=120.0)):
                pass
            _PROBED[key] = None
        except SandboxTimeout:
            _PROBED[key] = "importing it did not finish within 120 s"
        except ArenaError as exc:
            _PROBED[key] = str(exc)
    return _PROBED[key]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (OverflowError, ValueError, TypeError):
        return False


def _error_from(header: dict[str, Any], who: str) -> BaseException:
    kind = str(header.get("type", "Exception"))[:80]
    message = str(header.get("message", ""))[:4000]
    if kind in ("ParamError", "UsageError"):
        from arena.errors import ParamError

        return ParamError(message)
    if kind == "BoundaryViolation":
        from arena.contract import BoundaryViolation

        return BoundaryViolation(message)
    if kind in ("StrategyError", "SandboxedFailure"):
        return SandboxedFailure(message)
    return SandboxedFailure(f"{who} raised {kind}: {message}")


# ---------------------------------------------------------------------------------------------
# The worker's side (python -m arena.sandbox)


class _Audit:
    """Records what strategy code reaches for; never blocks anything (the sandbox does)."""

    WATCHED = {
        "open",
        "os.listdir",
        "os.scandir",
        "os.walk",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.fork",
        "os.kill",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "sys._getframe",
        "ctypes.dlopen",
        "shutil.rmtree",
        "os.remove",
        "os.rename",
        "sqlite3.connect",
    }

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.allowed: tuple[str, ...] = ()
        self.strategy_files: set[str] = set()
        self._busy = False

    def arm(self, strategy_files: set[str]) -> None:
        scratch = [os.environ.get("HOME", ""), os.environ.get("TMPDIR", "")]  # the worker's own folder, its to use
        code = [p for name in ("arena", "arena.attackers", "arena.defenders") for p in getattr(sys.modules.get(name), "__path__", [])]  # an editable install maps these
        code += [str(Path(f).parent) for f in strategy_files]  # the strategy's own package (its data files)
        self.allowed = tuple({str(Path(p).resolve()) for p in [sys.prefix, sys.base_prefix, *scratch, *code, *(p for p in sys.path if p)] if p and os.path.exists(p)})
        self.strategy_files = strategy_files

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self._busy or not self.strategy_files or event not in self.WATCHED or len(self.records) >= 500:
            return
        self._busy = True
        try:
            if event == "sys._getframe" and not self._from_strategy():
                return  # libraries look at frames all the time; the strategy's own look is the news
            detail = str(args[0])[:300] if args else ""
            if event in ("open", "os.listdir", "os.scandir", "os.remove", "os.rename", "shutil.rmtree") and self._is_library(detail):
                return
            self.records.append({"event": event, "detail": detail})
        finally:
            self._busy = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The worker's own moves (its fork per filter batch) are not the strategy's."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _is_library(self, path: str) -> bool:
        if not path or path.isdigit():
            return True
        resolved = os.path.abspath(path)
        return resolved.startswith(self.allowed) or resolved.startswith(("/usr/", "/proc/self", "/dev/null", "/dev/urandom", "/etc/ld.so", "/lib"))

    def _from_strategy(self) -> bool:
        frame = sys._getframe(2)
        return frame.f_code.co_filename in self.strategy_files


def _import_strategy(ref: dict[str, Any]) -> type:
    if ref.get("file"):
        spec = importlib.util.spec_from_file_location(str(ref["module"]), str(ref["file"]))
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {ref['file']}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[str(ref["module"])] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(str(ref["module"]))
    obj: Any = module
    for part in str(ref["qualname"]).split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"{ref['module']}.{ref['qualname']} is not a class")
    return obj


def _task_from(data: dict[str, Any]) -> Any:
    from arena.protocol import TaskSpec

    return TaskSpec(str(data["dataset"]), int(data["num_classes"]), tuple(int(v) for v in data["input_shape"]), str(data["architecture"]), int(data["epochs"]))  # type: ignore[arg-type]


class _Worker:
    def __init__(self, inbox: IO[bytes], outbox: IO[bytes], audit: _Audit) -> None:
        self.inbox, self.outbox, self.audit = inbox, outbox, audit
        self.cls: type | None = None
        self.deployed: Any = None
        self.input_filter: Any = None
        self.compute: Any = None

    def send(self, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
        write_frame(self.outbox, header, tensors)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.send({"op": "progress", "stage": str(stage), "done": int(done), "total": int(total)})

    def serve(self) -> None:
        while True:
            try:
                header, tensors = read_frame(self.inbox)
            except EOFError:
                return
            op = header.get("op")
            if op == "close":
                return
            try:
                handler = getattr(self, f"op_{op}", None)
                if handler is None:
                    raise ValueError(f"unknown request {op!r}")
                handler(header, tensors)
            except BaseException as exc:  # noqa: BLE001 - every failure is an answer
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    self.send({"op": "error", "type": "SystemExit", "message": f"the strategy called exit ({exc})"})
                    return
                self.send({"op": "error", "type": type(exc).__name__, "message": str(exc)})

    def op_hello(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        sys.path[:] = [p for p in header.get("sys_path", []) if isinstance(p, str)] or sys.path
        ref = header["strategy"]
        self.cls = _import_strategy(ref)
        files = {str(Path(f).resolve()) for f in [getattr(sys.modules.get(self.cls.__module__), "__file__", None)] if f}
        self.audit.arm(files)
        self.send({"op": "ready", "mode": "worker", "pid": os.getpid()})

    def op_attempts(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.send({"op": "attempts", "attempts": list(self.audit.records)})

    def _strategy(self, header: dict[str, Any]) -> Any:
        from arena.artifacts import check_version

        assert self.cls is not None
        check_version(self.cls, str(header["version"]), str(header["name"]))
        return self.cls(**header["params"])

    def op_attack(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        from arena.device import Compute, using
        from arena.protocol import Split
        from arena.provenance import pinned

        attacker = self._strategy(header)
        task = _task_from(header["task"])
        compute = Compute.from_dict(header["compute"])
        with pinned(), using(compute):
            data = Split(tensors["x"], tensors["y"]).to(compute.torch_device)
            generator = torch.Generator().manual_seed(int(header["seed"]))
            with _guarded(header.get("device_guard"), f"attacker {attacker.name!r}") as guard:
                if guard is not None:
                    guard.adopt(data)
                start = time.perf_counter()
                out = attacker.attack(task, data, generator, self.progress)
                seconds = time.perf_counter() - start
        state = {k: v.detach().cpu().contiguous() for k, v in out.model.state_dict().items()}
        self.send({"op": "attacked", "triggers": [t.to_dict() for t in out.triggers], "seconds": seconds}, state)

    def op_defend(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        import dataclasses
        import hashlib

        from arena.artifacts import published_builder
        from arena.device import Compute, using
        from arena.protocol import Split
        from arena.provenance import pinned

        defender = self._strategy(header)
        task = _task_from(header["task"])
        compute = Compute.from_dict(header["compute"])
        self.compute = compute
        weights = bytes(tensors["weights"].numpy().tobytes())
        if hashlib.sha256(weights).hexdigest() != header["sha256"]:
            raise ValueError("the published weights do not match their SHA-256")
        with pinned(), using(compute):
            model = published_builder(task)({"origins": header.get("origins", []), "published_architecture": header["published_architecture"], "key": "published"})
            model.load_state_dict(st_load(weights), strict=True)
            model.eval()
            clean = Split(tensors["clean_x"], tensors["clean_y"]).to(compute.torch_device)
            generator = torch.Generator().manual_seed(int(header["seed"]))
            with _guarded(header.get("device_guard"), f"defender {defender.name!r}") as guard:
                if guard is not None:
                    guard.adopt(model, clean)
                start = time.perf_counter()
                outcome = defender.defend(model, dataclasses.replace(task), clean, generator, self.progress)
                seconds = time.perf_counter() - start
                if guard is not None and outcome.input_filter is not None:  # the filter runs on the job's device too
                    outcome.input_filter.accept(outcome.model if outcome.model is not None else model, clean.x[:64])
        self.deployed = outcome.model if outcome.model is not None else model
        self.input_filter = outcome.input_filter
        verdict = None if outcome.verdict is None else outcome.verdict.to_dict()
        state, repaired = None, "none"
        if outcome.model is not None:
            shapes = {k: tuple(v.shape) for k, v in outcome.model.state_dict().items()}
            if shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}:  # the published architecture: its weights go back
                state, repaired = {k: v.detach().cpu().contiguous() for k, v in outcome.model.state_dict().items()}, "weights"
            else:  # another architecture (a preprocessing step in front...): it stays here and answers
                repaired = "served"
        self.send({"op": "defended", "verdict": verdict, "repaired": repaired, "filter": outcome.input_filter is not None, "seconds": seconds}, state)

    def op_filter(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if self.input_filter is None:
            raise ValueError("no input filter to ask")
        self._answer_in_fork(self._accept, tensors["x"])

    def op_predict(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if self.deployed is None:
            raise ValueError("no model to ask")
        self._answer_in_fork(self._predict, tensors["x"])

    def _answer_in_fork(self, answer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
        """Answer about one batch from a fresh fork of this worker as the defense left it."""
        if self.compute is not None and self.compute.device.startswith("cuda"):
            self.send({"op": "answer"}, {"answer": answer(x)})  # no fork under CUDA
            return
        read_end, write_end = os.pipe()
        with self.audit.paused():
            pid = os.fork()
        if pid == 0:  # a fresh copy of the worker as `run` left it: nothing survives this batch
            os.close(read_end)
            _seal_fork(keep=(0, 1, 2, write_end))
            code = 0
            try:
                with os.fdopen(write_end, "wb") as pipe:
                    write_frame(pipe, {"op": "answer"}, {"answer": answer(x)})
            except BaseException as exc:  # noqa: BLE001
                with contextlib.suppress(BaseException), os.fdopen(os.dup(2), "w") as err:
                    err.write(f"the defense's answer raised {type(exc).__name__}: {exc}\n")
                code = 1
            os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        try:
            _, answer_tensors = read_frame(io.BytesIO(data))
        except (EOFError, ValueError) as exc:
            raise ValueError(f"the defense gave no answer ({exc})") from None
        self.send({"op": "answer"}, answer_tensors)

    def _accept(self, x: torch.Tensor) -> torch.Tensor:
        from arena.device import using
        from arena.provenance import pinned

        with pinned(), using(self.compute), torch.no_grad():
            answer = self.input_filter.accept(self.deployed, x.to(self.compute.torch_device))
        return torch.as_tensor(answer).bool().cpu()

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        from arena.device import using
        from arena.provenance import pinned
        from arena.training import predict

        with pinned(), using(self.compute), torch.no_grad():
            return predict(self.deployed, x.to(self.compute.torch_device)).long().cpu()


def _seal_fork(keep: tuple[int, ...]) -> None:
    """What a fork answering one batch may not use to pass anything to a later batch: a file
    (it can write none: RLIMIT_FSIZE 0), or a descriptor the defense opened while it ran (a pipe
    or socket to a helper process it started; all closed). Memory it mapped shared while it ran
    stays mapped: that channel is not closed here (docs/design.md §1, what remains)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with EFBIG instead of killing the fork
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    highest = max(keep)
    for fd in range(3, highest + 1):
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.closerange(highest + 1, 65536)


@contextlib.contextmanager
def _guarded(wanted: Any, who: str) -> Iterator[Any]:
    """The fake device of `arena check` (arena/device.py, DeviceGuard), when asked for."""
    if not wanted:
        yield None
        return
    from arena.device import DeviceGuard

    guard = DeviceGuard(who)
    with guard:
        yield guard


def _fence_datasets() -> None:
    """A worker never loads a dataset: its split is all it gets (the files are hidden too)."""
    from arena import data

    def fence(name: str) -> Any:
        from arena.contract import BoundaryViolation

        raise BoundaryViolation("the strategy loaded a dataset itself; it must use only what its context gives it")

    data._fence = fence


def worker_main() -> None:
    """The worker: the protocol on the original stdout, whatever the strategy prints to stderr."""
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(1)
    audit = _Audit()
    sys.addaudithook(audit)
    _fence_datasets()
    _Worker(sys.stdin.buffer, outbox, audit).serve()


if __name__ == "__main__":
    worker_main()
