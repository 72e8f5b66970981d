"""Tournaments: a pure planner, an executor that runs jobs, and one scheduler that writes rows.

- `plan(suite, finished)` says what must run: the missing (or stale) matches, the attacked models
  they need (each trained once, honest baselines first) and which matches wait on which model.
  It is a pure function, testable without Ray.
- An `Executor` runs jobs: `RayExecutor` on a Ray cluster (one CPU slot per job, a deadline the
  driver keeps by killing the task: a hung plugin costs its own cells), `SerialExecutor` in this
  process, one job at a time (for debugging and tests; it cannot interrupt a job that hangs).
- `run_tournament` keeps at most `executor.slots` jobs in flight, defenses first (they finish
  rows), and writes every finished match as one row in the results store, here and only here; a
  failure is a row too. Workers only compute.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from arena.artifacts import honest_spec
from arena.device import CPU, Compute, check_gpus_per_task, cluster_gpus, compute_class, ray_compute, resolve, store_key
from arena.match import AttackRecord, attack_stage, defense_stage
from arena.registry import plugin_paths, use_plugin_paths
from arena.results import ResultsStore
from arena.specs import AttackSpec, MatchSpec
from arena.store import ArtifactStore, arena_home, home_lock
from arena.suite import Suite


class Status(str, Enum):
    """How a match ended; the results store's `status` column."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


# ---------------------------------------------------------------------------------------------
# Jobs and the plan


@dataclass(frozen=True)
class AttackJob:
    """Train (or take from the store) one attacked model and evaluate it undefended."""

    attack: AttackSpec
    compute: Compute = CPU


@dataclass(frozen=True)
class DefenseJob:
    """Defend one match's attacked model and score the deployed system."""

    match: MatchSpec
    attacked: AttackRecord
    honest: AttackRecord
    stealth_tolerance: float
    compute: Compute = CPU


Job = AttackJob | DefenseJob


@dataclass(frozen=True)
class Plan:
    matches: int  # in the suite
    todo: tuple[MatchSpec, ...]  # missing or stale, in suite order
    attacks: tuple[AttackSpec, ...]  # the attacked models `todo` needs, honest baselines first
    dependents: dict[str, tuple[MatchSpec, ...]]  # attack key -> the matches that need its record

    @property
    def skipped(self) -> int:
        return self.matches - len(self.todo)


def plan(suite: Suite, finished: Iterable[str]) -> Plan:
    """What must run for `suite` when the match keys in `finished` are done and current."""
    done = set(finished)
    matches = suite.matches()
    todo = tuple(m for m in matches if m.key not in done)
    attacks: dict[str, AttackSpec] = {}
    dependents: dict[str, list[MatchSpec]] = {}
    for m in todo:
        for a in (m.attack, honest_spec(m.attack)):
            attacks.setdefault(a.key, a)
            if m not in dependents.setdefault(a.key, []):
                dependents[a.key].append(m)
    ordered = sorted(attacks.values(), key=lambda a: a.attacker.name != "none")  # every match needs a baseline
    return Plan(len(matches), todo, tuple(ordered), {k: tuple(v) for k, v in dependents.items()})


# ---------------------------------------------------------------------------------------------
# Executors


def _worker_setup(home: str, plugin_folders: tuple[str, ...]) -> None:
    # stages pin their own torch thread count (arena.provenance); the store is the driver's, and
    # so are the plugin folders it added at run time (a submission installed in isolation)
    os.environ["ARENA_HOME"] = home
    use_plugin_paths(plugin_folders)


def run_job(job: Job, home: str, plugin_folders: tuple[str, ...] = ()) -> AttackRecord | dict[str, Any]:
    """What a worker does with a job: an attack record, or a match result as JSON."""
    _worker_setup(home, plugin_folders)
    if isinstance(job, AttackJob):
        return attack_stage(job.attack, ArtifactStore(), compute=job.compute)
    return defense_stage(job.match, job.attacked, job.honest, ArtifactStore(), stealth_tolerance=job.stealth_tolerance, compute=job.compute).to_json()


class Executor(Protocol):
    """Runs jobs; the scheduler asks it for finished ones and cancels overdue ones."""

    slots: int  # jobs it runs at once

    def compute(self, choice: str, amp: bool) -> Compute:
        """The one Compute of every job of this run, for the user's `--device` choice; a choice
        its workers cannot honour is a DeviceError here, before anything is scheduled."""

    def submit(self, job: Job) -> Any:
        """Start `job`; returns a handle."""

    def finished(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        """(handle, outcome) of the handles that have finished, waiting at most `timeout` s for
        the first; an outcome is the job's return value or the exception it raised."""

    def cancel(self, handle: Any) -> None:
        """Stop a job (a deadline passed, or the tournament is interrupted)."""


class SerialExecutor:
    """Runs each job in this process when it is submitted: no cluster, no parallelism, no
    deadline (a hanging strategy hangs the tournament). For debugging and tests."""

    slots = 1

    def __init__(self, home: str | None = None) -> None:
        self.home = home or str(arena_home())
        self._outcomes: dict[int, Any] = {}
        self._next = 0

    def compute(self, choice: str, amp: bool) -> Compute:
        return resolve(choice, amp)  # the jobs run here: this process's devices decide

    def submit(self, job: Job) -> int:
        handle, self._next = self._next, self._next + 1
        previous = os.environ.get("ARENA_HOME")
        try:
            self._outcomes[handle] = run_job(job, self.home, plugin_paths())
        except Exception as exc:  # the strategy's error becomes its cells' rows
            self._outcomes[handle] = RuntimeError("".join(traceback.format_exception_only(type(exc), exc)).strip())
        finally:
            if previous is None:
                os.environ.pop("ARENA_HOME", None)
            else:
                os.environ["ARENA_HOME"] = previous
        return handle

    def finished(self, handles: list[int], timeout: float) -> list[tuple[int, Any]]:
        return [(h, self._outcomes.pop(h)) for h in handles if h in self._outcomes]

    def cancel(self, handle: int) -> None:
        self._outcomes.pop(handle, None)


def _short_error(exc: BaseException) -> str:
    """The strategy's own error, without Ray's wrapping."""
    cause = getattr(exc, "cause", None) or exc
    return "".join(traceback.format_exception_only(type(cause), cause)).strip()


class RayExecutor:
    """Runs jobs as Ray tasks, one CPU slot each and, with `gpus_per_task`, that share of a GPU
    (0.25 packs four matches per card); starts a local Ray unless one is running or an address
    is given (`--address`, `RAY_ADDRESS`). A GPU task runs on one CPU and one torch thread: its
    work is on the card, and the CPU side (the host generator's draws, the Python loop) is serial."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_task: float = 1.0,
        retries: int = 1,
        home: str | None = None,
        gpus_per_task: float = 0.0,
    ) -> None:
        import ray

        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            address = address or os.environ.get("RAY_ADDRESS") or None
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
        self.home = home or str(arena_home())
        self.gpus_per_task = gpus_per_task
        self.cluster_gpus = cluster_gpus()
        check_gpus_per_task(gpus_per_task, "auto", self.cluster_gpus)
        slots = int(ray.cluster_resources().get("CPU", 1) // cpus_per_task)
        if gpus_per_task > 0:
            slots = min(slots, int(self.cluster_gpus / gpus_per_task + 1e-9))
        self.slots = max(1, slots)
        self._remote = ray.remote(run_job).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=retries, retry_exceptions=False)

    def compute(self, choice: str, amp: bool) -> Compute:
        """The workers compute where their resources put them: on their share of a GPU when the
        tournament asks for one, else on CPUs (Ray hides the GPUs from tasks that asked for none)."""
        return ray_compute(choice, amp, self.gpus_per_task, self.cluster_gpus)

    def submit(self, job: Job) -> Any:
        return self._remote.remote(job, self.home, plugin_paths())

    def finished(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        import ray

        done, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in done:
            try:
                out.append((ref, ray.get(ref)))
            except Exception as exc:  # the strategy's error, or a system failure past its retries
                out.append((ref, RuntimeError(_short_error(exc))))
        return out

    def cancel(self, handle: Any) -> None:
        import ray

        ray.cancel(handle, force=True)


# ---------------------------------------------------------------------------------------------
# The scheduler


@dataclass
class Summary:
    suite: str
    planned: int
    skipped: int  # already ok (and current) in the store
    replayed: int = 0  # kept rows played again: they scored another model than this run's (`ResultsStore.other_model_rows`)
    ok: int = 0
    failed: int = 0
    attacks_trained: int = 0
    attacks_cached: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.failed


ProgressHook = Callable[[Summary], None]


@dataclass
class _Flight:
    job: Job
    deadline: float
    limit: float


class _Run:
    """One tournament's bookkeeping: what is queued, in flight and settled, and the one row writer."""

    def __init__(
        self, suite: Suite, results: ResultsStore, work: Plan, executor: Executor, summary: Summary, on_update: ProgressHook | None, start: float, compute: Compute
    ) -> None:
        self.suite, self.results, self.work, self.executor, self.summary, self.on_update = suite, results, work, executor, summary, on_update
        self.compute = compute
        self.start = start
        self.records: dict[str, AttackRecord | BaseException] = {}
        self.settled: set[str] = set()
        self.ready: list[MatchSpec] = []  # matches whose attack records are in
        self.attack_queue = list(work.attacks)
        self.inflight: dict[Any, _Flight] = {}

    def write(self, match: MatchSpec, status: Status, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.results.put(self.suite.name, match, status.value, result=result, error=error)
        if status is Status.OK:
            self.summary.ok += 1
        else:
            self.summary.failed += 1

    def settle(self, match: MatchSpec) -> None:
        """Queue a match whose attack records are in, or fail it when one of them failed."""
        if match.key in self.settled:
            return
        for key in (match.attack.key, honest_spec(match.attack).key):
            rec = self.records.get(key)
            if rec is None:
                return
            if isinstance(rec, BaseException):
                role = "honest baseline" if key != match.attack.key else "attack"
                self.settled.add(match.key)
                self.write(match, Status.TIMEOUT if isinstance(rec, TimeoutError) else Status.ERROR, error=f"{role} failed: {rec}")
                return
        self.settled.add(match.key)
        self.ready.append(match)

    def finish(self, flight: _Flight, outcome: Any) -> None:
        job = flight.job
        if isinstance(job, AttackJob):
            self.records[job.attack.key] = outcome
            if isinstance(outcome, AttackRecord):
                self.summary.attacks_cached += outcome.cached
                self.summary.attacks_trained += not outcome.cached
            for m in self.work.dependents[job.attack.key]:
                self.settle(m)
        elif isinstance(outcome, dict):
            self.write(job.match, Status.OK, result=outcome)
        else:
            self.write(job.match, Status.TIMEOUT if isinstance(outcome, TimeoutError) else Status.ERROR, error=str(outcome))

    def notify(self) -> None:
        self.summary.seconds = time.perf_counter() - self.start
        if self.on_update is not None:
            self.on_update(self.summary)

    def submit(self) -> None:
        """Fill the executor's free slots: defenses first (they finish rows), then attacks."""
        while len(self.inflight) < self.executor.slots and (self.ready or self.attack_queue):
            job: Job
            if self.ready:
                m = self.ready.pop(0)
                job = DefenseJob(m, self.records[m.attack.key], self.records[honest_spec(m.attack).key], self.suite.stealth_tolerance, self.compute)  # type: ignore[arg-type]
                limit = self.suite.limits.defense_timeout_s
            else:
                job, limit = AttackJob(self.attack_queue.pop(0), self.compute), self.suite.limits.attack_timeout_s
            self.inflight[self.executor.submit(job)] = _Flight(job, time.monotonic() + limit, limit)

    def collect(self) -> None:
        """Take in what finished, and kill and fail what ran past its deadline."""
        for handle, outcome in self.executor.finished(list(self.inflight), timeout=0.5):
            self.finish(self.inflight.pop(handle), outcome)
        now = time.monotonic()
        for handle in [h for h, f in self.inflight.items() if now > f.deadline]:
            flight = self.inflight.pop(handle)
            self.executor.cancel(handle)
            kind = "attack" if isinstance(flight.job, AttackJob) else "defense"
            self.finish(flight, TimeoutError(f"{kind} exceeded its time limit of {flight.limit:g} s and was killed"))

    def play(self) -> None:
        try:
            self.notify()
            while self.attack_queue or self.ready or self.inflight:
                self.submit()
                self.collect()
                self.notify()
        finally:
            for handle in self.inflight:
                self.executor.cancel(handle)
        self.notify()


def run_tournament(
    suite: Suite,
    results: ResultsStore,
    *,
    executor: Executor | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    on_update: ProgressHook | None = None,
    device: str = "auto",
    amp: bool = False,
    gpus_per_task: float | None = None,
) -> Summary:
    """Play every missing or stale match of `suite`; rows go to `results` as they finish.
    Without an executor, a `RayExecutor` (local Ray, or `address`) with `gpus_per_task` (default:
    the suite's) of a GPU per job. Every job computes under one Compute (`device`, `amp`); a row
    computed under another numerics class (CPU, GPU, mixed precision) is not this run's: its
    match is played again, so one game never mixes the two (docs/design.md §11)."""
    with home_lock(arena_home(), f"suite {suite.name!r}"):
        return _run_tournament(suite, results, executor, address, num_cpus, on_update, device, amp, gpus_per_task)


def _run_tournament(
    suite: Suite,
    results: ResultsStore,
    executor: Executor | None,
    address: str | None,
    num_cpus: int | None,
    on_update: ProgressHook | None,
    device: str,
    amp: bool,
    gpus_per_task: float | None,
) -> Summary:
    start = time.perf_counter()
    gpus = suite.gpus_per_task if gpus_per_task is None else gpus_per_task
    # known before Ray starts; the cluster's own GPUs are checked once it is up
    compute = ray_compute(device, amp, gpus) if executor is None else executor.compute(device, amp)
    store = ArtifactStore(arena_home())  # an unusable ARENA_HOME fails here, not in every worker

    def held(attack_key: str) -> str | None:
        return store.held_sha256(store_key(attack_key, compute))

    work = plan(suite, results.finished(suite.name, compute_class(compute), models=held))
    summary = Summary(suite.name, planned=work.matches, skipped=work.skipped)
    if not work.todo:
        return summary  # nothing to play: no cluster started
    if executor is None:
        executor = RayExecutor(address, num_cpus, retries=suite.limits.retries, gpus_per_task=gpus)
        compute = executor.compute(device, amp)  # the cluster's GPUs, checked before anything is scheduled
    _Run(suite, results, work, executor, summary, on_update, start, compute).play()
    # The models this run trained may differ from those a kept row (imported from a published
    # board) scored: same numerics label, other CPU kernels. Those rows are played again against
    # this store's model, so one board never holds two models of one attack.
    other = results.other_model_rows(suite.name, held)
    again = plan(suite, {m.key for m in suite.matches()} - other)
    if again.todo:
        summary.skipped -= len(again.todo)
        summary.replayed += len(again.todo)
        _Run(suite, results, again, executor, summary, on_update, start, compute).play()
    return summary
