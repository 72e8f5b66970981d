"""Tournaments on Ray: attack tasks train each attacked model once, defense tasks fan out from them.

The driver is a small scheduler. It keeps at most as many tasks in flight as the cluster has
CPU slots, so a task starts about when it is submitted and its deadline can be kept by the
driver (`ray.cancel(force=True)` kills a task that overruns: a hung plugin costs its own cells).
Every finished match becomes one row in the results store, written here and only here; a
failure is a row too. Workers only compute.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arena.match import AttackRecord, attack_stage, defense_stage, honest_spec
from arena.results import ResultsStore
from arena.specs import AttackSpec, MatchSpec
from arena.store import ArtifactStore, arena_home
from arena.suite import Suite


def _worker_setup(threads: int, home: str) -> None:
    import torch

    # two workers with two threads each on two cores run 15x slower than with one each
    torch.set_num_threads(max(1, threads))
    os.environ["ARENA_HOME"] = home


def _attack_task(attack: AttackSpec, home: str, threads: int) -> AttackRecord:
    _worker_setup(threads, home)
    return attack_stage(attack, ArtifactStore())


def _defense_task(spec: MatchSpec, attacked: AttackRecord, honest: AttackRecord, home: str, threads: int, tolerance: float) -> dict[str, Any]:
    _worker_setup(threads, home)
    return defense_stage(spec, attacked, honest, ArtifactStore(), stealth_tolerance=tolerance).to_json()


def _short_error(exc: BaseException) -> str:
    """The strategy's own error, without Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        return text
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


@dataclass
class Summary:
    suite: str
    planned: int
    skipped: int  # already ok in the store
    ok: int = 0
    failed: int = 0
    attacks_trained: int = 0
    attacks_cached: int = 0
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.failed


ProgressHook = Callable[[Summary], None]


def _ensure_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)


def run_tournament(
    suite: Suite,
    results: ResultsStore,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    on_update: ProgressHook | None = None,
) -> Summary:
    """Play every missing match of `suite`; rows go to `results` as they finish."""
    import ray

    start = time.perf_counter()
    matches = suite.matches()
    finished = results.finished(suite.name)
    todo = [m for m in matches if m.key not in finished]
    summary = Summary(suite.name, planned=len(matches), skipped=len(matches) - len(todo))
    if not todo:
        return summary
    _ensure_ray(address, num_cpus)
    home = str(arena_home())
    ArtifactStore(arena_home())  # an unusable ARENA_HOME fails here, not in every worker
    threads = max(1, int(cpus_per_task))
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
    options = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task, "max_retries": suite.limits.retries, "retry_exceptions": False}
    attack_remote = ray.remote(_attack_task).options(**options)
    defense_remote = ray.remote(_defense_task).options(**options)

    # What must be trained: the attacked models of the missing matches and their honest baselines.
    dependents: dict[str, list[MatchSpec]] = {}  # attack key -> matches that need its record
    attacks: dict[str, AttackSpec] = {}
    for m in todo:
        for a in (m.attack, honest_spec(m.attack)):
            attacks.setdefault(a.key, a)
            dependents.setdefault(a.key, []).append(m)
    settled: set[str] = set()
    attack_queue = list(attacks.values())
    attack_queue.sort(key=lambda a: a.attacker.name != "none")  # baselines first: every match needs one
    records: dict[str, AttackRecord | BaseException] = {}
    ready: list[MatchSpec] = []
    inflight: dict[Any, tuple[str, Any, float]] = {}  # ref -> (kind, item, deadline)

    def fail(match: MatchSpec, status: str, error: str) -> None:
        results.put(suite.name, match, status, error=error)
        summary.failed += 1

    def settle(match: MatchSpec) -> None:
        """Queue a match whose attack records are in, or fail it when one of them failed."""
        if match.key in settled:
            return
        for key in (match.attack.key, honest_spec(match.attack).key):
            rec = records.get(key)
            if rec is None:
                return
            if isinstance(rec, BaseException):
                kind = "timeout" if isinstance(rec, TimeoutError) else "error"
                role = "honest baseline" if key != match.attack.key else "attack"
                settled.add(match.key)
                fail(match, kind, f"{role} failed: {rec}")
                return
        settled.add(match.key)
        ready.append(match)

    def notify() -> None:
        summary.seconds = time.perf_counter() - start
        if on_update is not None:
            on_update(summary)

    try:
        notify()
        while attack_queue or ready or inflight:
            while len(inflight) < slots and (ready or attack_queue):
                if ready:  # defenses first: they finish rows
                    m = ready.pop(0)
                    rec_a, rec_h = records[m.attack.key], records[honest_spec(m.attack).key]
                    ref = defense_remote.remote(m, rec_a, rec_h, home, threads, suite.stealth_tolerance)
                    inflight[ref] = ("defense", m, time.monotonic() + suite.limits.defense_timeout_s)
                else:
                    a = attack_queue.pop(0)
                    ref = attack_remote.remote(a, home, threads)
                    inflight[ref] = ("attack", a, time.monotonic() + suite.limits.attack_timeout_s)
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            now = time.monotonic()
            for ref in list(inflight):
                kind, item, deadline = inflight[ref]
                if ref not in done and now <= deadline:
                    continue
                del inflight[ref]
                outcome: Any
                if ref in done:
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # the strategy's error, or a system failure past its retries
                        outcome = RuntimeError(_short_error(exc))
                else:
                    ray.cancel(ref, force=True)
                    limit = suite.limits.defense_timeout_s if kind == "defense" else suite.limits.attack_timeout_s
                    outcome = TimeoutError(f"{kind} exceeded its time limit of {limit:g} s and was killed")
                if kind == "attack":
                    records[item.key] = outcome
                    if isinstance(outcome, AttackRecord):
                        summary.attacks_cached += outcome.cached
                        summary.attacks_trained += not outcome.cached
                    for m in dependents[item.key]:
                        settle(m)
                else:
                    if isinstance(outcome, dict):
                        results.put(suite.name, item, "ok", result=outcome)
                        summary.ok += 1
                    else:
                        fail(item, "timeout" if isinstance(outcome, TimeoutError) else "error", str(outcome))
            notify()
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
    notify()
    return summary
