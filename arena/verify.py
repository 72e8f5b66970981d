"""`arena leaderboard verify`: re-play published cells from an empty store and compare.

A published cell is one row of `leaderboards/<suite>/results.csv`. Its match spec is rebuilt from
the row (and checked against the row's match key), replayed from scratch in a temporary
`ARENA_HOME` (honest and attacked models trained side by side, then the defense), and compared
with what was published: the attacked model's SHA-256 and the CA, ASR and utility of the
defended system. Under the same numerics the contract is bit-identical results; under other
numerics (another torch build, CPU kernel set or device) the numbers may move in their last
bits and through training, so they must agree within `tolerance`, and the report names the
numerics that differ.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from arena.artifacts import honest_spec, instantiate_attacker, instantiate_defender
from arena.device import CPU, Compute
from arena.errors import ArenaError, UsageError
from arena.match import (
    Prepared,
    run_match,
    task_for,
    train_side_by_side,
)
from arena.protocol import ProgressFn, no_progress
from arena.provenance import numerics
from arena.specs import AttackSpec, MatchSpec, StrategySpec
from arena.store import ArtifactStore

DEFAULT_TOLERANCE = 0.02  # absolute, on CA, ASR and utility, across different numerics only
COMPARED = (("ca", "defended_ca"), ("asr", "defended_asr"), ("utility", "utility"))
REQUIRED_COLUMNS = {
    "match_key", "status", "attacker", "attacker_version", "attacker_params", "attacker_label", "defender", "defender_version",
    "defender_params", "defender_label", "dataset", "seed", "artifact_sha256", "defended_ca", "defended_asr", "utility",
}


@dataclass
class CellCheck:
    """One published cell, replayed."""

    match_key: str
    attacker: str
    defender: str
    seed: int
    published: dict[str, Any]
    reproduced: dict[str, Any]
    numerics_differ: list[str]  # numerics fields that differ between the two runs
    reproduces: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def published_rows(folder: Path, suite_name: str) -> pd.DataFrame:
    """The published rows of a suite that can be replayed (status ok)."""
    path = folder / "results.csv"
    if not path.exists():
        raise UsageError(f"suite {suite_name!r} has no published results: {path} does not exist. Publish it first with `arena leaderboard refresh {suite_name}`.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a readable results table ({exc}).") from None
    missing = sorted(REQUIRED_COLUMNS - set(frame.columns))
    if missing and not frame.empty:
        raise UsageError(f"{path} lacks the columns {', '.join(missing)} that a published cell needs to be replayed; re-publish it with `arena leaderboard refresh {suite_name}`.")
    if frame.empty or "status" not in frame or not (frame.status == "ok").any():
        raise UsageError(f"suite {suite_name!r} has no published rows with status ok in {path}; there is nothing to verify.")
    return frame[frame.status == "ok"].reset_index(drop=True)


def choose(frame: pd.DataFrame, cells: int, seed: int, suite_name: str) -> pd.DataFrame:
    """`cells` published rows drawn at random (reproducibly, from `seed`)."""
    if cells < 1:
        raise UsageError(f"--cells must be at least 1, got {cells}.")
    if cells > len(frame):
        raise UsageError(f"--cells {cells} is more than the {len(frame)} published cells of suite {suite_name!r}; ask for at most {len(frame)}.")
    index = sorted(random.Random(seed).sample(range(len(frame)), cells))
    return frame.iloc[index].reset_index(drop=True)


def spec_of(row: Any, suite: Any) -> MatchSpec:
    """The match spec of a published row: its own columns, the suite's for any the row lacks."""

    def column(name: str, default: Any) -> Any:
        value = getattr(row, name, None)
        return default if value is None or (isinstance(value, float) and pd.isna(value)) else value

    try:
        attacker_params, defender_params = json.loads(row.attacker_params), json.loads(row.defender_params)
    except (TypeError, ValueError):
        raise UsageError(f"the published row {row.match_key[:12]} has parameters that are not JSON objects; the results file was edited.") from None
    attack = AttackSpec(
        StrategySpec.of(row.attacker, str(row.attacker_version), attacker_params),
        str(row.dataset),
        str(column("architecture", suite.architecture)),
        int(column("epochs", suite.epochs)),
        float(column("clean_budget", suite.clean_budget)),
        int(row.seed),
    )
    spec = MatchSpec(attack, StrategySpec.of(row.defender, str(row.defender_version), defender_params))
    if spec.key != row.match_key:
        raise UsageError(
            f"the published row {row.match_key[:12]} ({row.attacker} vs {row.defender}, seed {row.seed}) does not rebuild to its own "
            "match key; the results file was edited or written by another arena."
        )
    return spec


def _numerics_diff(published: Any, compute: Compute = CPU) -> list[str]:
    if not isinstance(published, str) or not published:
        return ["unrecorded in the published row"]
    theirs, ours = json.loads(published), numerics(compute)
    return [f"{k}: {theirs.get(k)} vs {ours.get(k)}" for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]


def verify_cells(
    chosen: pd.DataFrame,
    suite: Any,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: ProgressFn = no_progress,
    home: Path | None = None,
    compute: Compute = CPU,
) -> list[CellCheck]:
    """Replay each chosen row from an empty store (a temporary one unless `home` is given), on
    `compute`'s device."""
    specs = [spec_of(row, suite) for row in chosen.itertuples()]
    with tempfile.TemporaryDirectory(prefix="arena-verify-") as tmp:
        store = ArtifactStore(home or Path(tmp))
        attacks: dict[str, AttackSpec] = {}
        for spec in specs:
            for a in (honest_spec(spec.attack), spec.attack):
                attacks.setdefault(f"{a.attacker.name} seed {a.seed} {a.key[:6]}", a)
        try:
            train_side_by_side(attacks, store, progress, compute=compute)
        except OSError:  # no processes to be had: the stages below train one by one
            pass
        checks = []
        for row, spec in zip(chosen.itertuples(), specs):
            checks.append(_check(row, spec, store, tolerance, progress, compute))
    return checks


def _check(row: Any, spec: MatchSpec, store: ArtifactStore, tolerance: float, progress: ProgressFn, compute: Compute) -> CellCheck:
    published = {"artifact_sha256": row.artifact_sha256, **{k: float(getattr(row, col)) for k, col in COMPARED}}
    base: dict[str, Any] = dict(match_key=spec.key, attacker=str(row.attacker_label), defender=str(row.defender_label), seed=int(row.seed), published=published)
    try:
        attacker, defender = instantiate_attacker(spec.attack.attacker), instantiate_defender(spec.defender)
        task = task_for(spec.attack.dataset, spec.attack.architecture, spec.attack.epochs)
        result = run_match(Prepared(spec, task, attacker, defender), store, progress, compute=compute).to_json()
    except Exception as exc:  # a user error or a strategy's own failure costs its cell, not the verification
        what = str(exc) if isinstance(exc, ArenaError) else f"{type(exc).__name__}: {exc}"
        return CellCheck(**base, reproduced={}, numerics_differ=[], reproduces=False, why=f"could not be replayed: {what}")
    reproduced = {"artifact_sha256": result["artifact_sha256"], "ca": result["defended"]["ca"], "asr": result["defended"]["asr"], "utility": result["utility"]}
    differ = _numerics_diff(getattr(row, "numerics", None), compute)
    gaps = {k: abs(reproduced[k] - published[k]) for k, _ in COMPARED}
    if not differ:
        same = reproduced["artifact_sha256"] == published["artifact_sha256"] and all(g == 0 for g in gaps.values())
        hash_differs = reproduced["artifact_sha256"] != published["artifact_sha256"]
        gap_text = ", ".join(f"{k} by {g:.2g}" for k, g in gaps.items() if g) + ("; model hash differs" if hash_differs else "")
        why = "bit-identical (same numerics)" if same else f"differs under the same numerics: {gap_text}"
    else:
        same = all(g <= tolerance for g in gaps.values())
        why = ("within" if same else "outside") + f" tolerance {tolerance:g} under other numerics (largest gap {max(gaps.values()):.3g})"
    return CellCheck(**base, reproduced=reproduced, numerics_differ=differ, reproduces=same, why=why)
