"""The results store: one row per match in an embedded SQLite database, written by one process.

Failures are rows (status `error` / `timeout` / `skipped`) with their error text. A rerun skips
rows whose status is `ok`, so an interrupted tournament resumes where it stopped. Tables are
derived from the rows with pandas.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from arena.device import numerics_class
from arena.errors import StoreError
from arena.specs import MatchSpec, canonical_json

STATUSES = ("ok", "error", "timeout", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS matches (
    suite TEXT NOT NULL,
    key TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'timeout', 'skipped')),
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    updated TEXT NOT NULL,
    PRIMARY KEY (suite, key)
)
"""


# SQLite's names for a file that is not a (sound) database: a damaged page, a truncated file, or
# another program's file (e.g. overwritten); anything else (locked, read-only, disk full) is about
# where the file lives, not about its bytes.
DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class ResultsStore:
    """Every query goes through `_sql`: a database SQLite cannot read is a StoreError that names
    the file and what to do, never a traceback; the file itself is left as it is."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the folder of the results database {self.path} ({exc.strerror or exc}). Set ARENA_HOME to a writable directory.") from None
        with self._sql():
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)

    @contextlib.contextmanager
    def _sql(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            name = str(getattr(exc, "sqlite_errorname", ""))
            if name.startswith(DAMAGED) or "no such column" in str(exc):
                raise StoreError(
                    f"The results database {self.path} is damaged or is not an arena results database ({exc}). "
                    f"Move it away (`mv {self.path} {self.path}.damaged`, and its {self.path.name}-wal file if there is one) and the next command starts an "
                    "empty one; the models stored under ARENA_HOME are kept, so a suite played again reuses them."
                ) from None
            raise StoreError(f"Cannot use the results database {self.path} ({exc}). Set ARENA_HOME to a writable directory, or wait for the process that holds it.") from None

    def _damaged_row(self, suite: str, key: Any, why: Exception) -> StoreError:
        quoted = str(suite).replace("'", "''")
        return StoreError(
            f"The results database {self.path} holds a row it cannot read (suite {suite!r}, match {key}): {type(why).__name__}: {why}. "
            f"Delete that row (`sqlite3 {self.path} \"DELETE FROM matches WHERE suite = '{quoted}' AND key = '{key}'\"`; the match is then "
            f"played again by the next tournament) or move the whole file away (`mv {self.path} {self.path}.damaged`)."
        )

    def close(self) -> None:
        self.db.close()

    def put(self, suite: str, spec: MatchSpec, status: str, result: dict[str, Any] | None = None, error: str | None = None, attempts: int = 1) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._sql():
            self.db.execute(
                "INSERT OR REPLACE INTO matches (suite, key, spec, status, result, error, attempts, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (suite, spec.key, json.dumps(spec.to_dict()), status, None if result is None else json.dumps(result), error, attempts, time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            )

    def finished(self, suite: str, numerics: str = "cpu") -> set[str]:
        """Keys of the matches of `suite` that ended `ok` under the installed strategies' code and
        under the numerics class `numerics` (arena.device.numerics_class): a rerun of that class
        skips them, and re-runs stale ones (see `mark_stale`) and those of another class."""
        frame = self.frame(suite)
        if frame.empty:
            return set()
        frame = mark_stale(frame)
        ours = frame.numerics.map(lambda n: numerics_class(json.loads(n) if isinstance(n, str) else None) == numerics)
        return set(frame.match_key[(frame.status == "ok") & ~frame.stale & ours])

    def rows(self, suite: str) -> list[dict[str, Any]]:
        with self._sql():
            stored = self.db.execute("SELECT key, spec, status, result, error, attempts, updated FROM matches WHERE suite = ? ORDER BY key", (suite,)).fetchall()
        out = []
        for key, spec, status, result, error, attempts, updated in stored:
            try:
                spec, result = json.loads(spec), None if result is None else json.loads(result)
                if not isinstance(spec, dict) or not (result is None or isinstance(result, dict)):
                    raise TypeError("its spec or result is JSON but not an object")
            except (TypeError, ValueError) as exc:  # not text, not JSON, or JSON of another shape
                raise self._damaged_row(suite, key, exc) from None
            out.append({"key": key, "spec": spec, "status": status, "result": result, "error": error, "attempts": attempts, "updated": updated})
        return out

    def suites(self) -> list[str]:
        with self._sql():
            return [row[0] for row in self.db.execute("SELECT DISTINCT suite FROM matches ORDER BY suite")]

    def frame(self, suite: str) -> pd.DataFrame:
        """One tidy row per match: strategy labels, seed, status, every metric, costs, provenance."""
        records = []
        for row in self.rows(suite):
            try:
                records.append(self._record(suite, row))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a field missing or of the wrong type
                raise self._damaged_row(suite, row["key"], exc) from None
        return pd.DataFrame.from_records(records)

    @staticmethod
    def _record(suite: str, row: dict[str, Any]) -> dict[str, Any]:
        spec = MatchSpec.from_dict(row["spec"])
        r = row["result"] or {}
        verdict = r.get("defended", {}).get("verdict") or {}
        attack = spec.attack
        return {
            "suite": suite,
            "match_key": row["key"],
            "attacker": attack.attacker.name,
            "attacker_version": attack.attacker.version,
            "attacker_params": json.dumps(attack.attacker.param_dict, sort_keys=True),
            "defender": spec.defender.name,
            "defender_version": spec.defender.version,
            "defender_params": json.dumps(spec.defender.param_dict, sort_keys=True),
            "dataset": attack.dataset,
            "architecture": attack.architecture,
            "epochs": attack.epochs,
            "clean_budget": attack.clean_budget,
            "seed": attack.seed,
            "status": row["status"],
            "honest_ca": r.get("honest", {}).get("ca"),
            "attacked_ca": r.get("attacked", {}).get("ca"),
            "attacked_asr": r.get("attacked", {}).get("asr"),
            "defended_ca": r.get("defended", {}).get("ca"),
            "defended_asr": r.get("defended", {}).get("asr"),
            "utility": r.get("utility"),
            "stealthy": r.get("stealthy"),
            "verdict_flagged": verdict.get("flagged"),
            "verdict_score": verdict.get("score"),
            "verdict_labels": None if not verdict else json.dumps(verdict.get("labels", [])),
            "targets": json.dumps(r.get("attacked", {}).get("targets")) if r else None,
            "deployed": r.get("defended", {}).get("deployed"),
            "not_applicable": r.get("defended", {}).get("not_applicable"),
            "seconds_attack": r.get("seconds", {}).get("attack"),
            "seconds_defense": r.get("seconds", {}).get("defense"),
            "clean_samples": r.get("clean_samples"),
            "artifact_sha256": r.get("artifact_sha256"),
            "fallback_sha256": r.get("defended", {}).get("fallback_sha256"),
            "attacker_fingerprint": r.get("fingerprints", {}).get("attacker"),
            "honest_fingerprint": r.get("fingerprints", {}).get("honest"),
            "defender_fingerprint": r.get("fingerprints", {}).get("defender"),
            "numerics": canonical_json(r["numerics"]) if r.get("numerics") else None,
            "arena_version": r.get("provenance", {}).get("arena_version"),
            "git_commit": r.get("provenance", {}).get("git_commit"),
            "error": row["error"],
            "attempts": row["attempts"],
            "updated": row["updated"],
        }


def default_results() -> ResultsStore:
    """The results database under ARENA_HOME."""
    from arena.store import arena_home

    return ResultsStore(arena_home() / "results.sqlite")


def mark_stale(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `stale` and `stale_reason`: an `ok` row is stale when a strategy's code fingerprint
    recorded in it differs from the installed code's (or none was recorded). Rows of strategies
    that are not installed here cannot be checked and are left as they are."""
    from arena.errors import ArenaError
    from arena.provenance import code_fingerprint
    from arena.registry import ATTACKERS, DEFENDERS

    current: dict[tuple[str, str], str | None] = {}

    def installed(kind: str, name: str) -> str | None:
        if (kind, name) not in current:
            try:
                current[kind, name] = code_fingerprint((ATTACKERS if kind == "attacker" else DEFENDERS).get(name))
            except ArenaError:
                current[kind, name] = None
        return current[kind, name]

    out = frame.copy()
    reasons: list[str | None] = []
    for row in out.itertuples():
        why = []
        if row.status == "ok":
            for role, kind, name in (("attacker", "attacker", row.attacker), ("honest", "attacker", "none"), ("defender", "defender", row.defender)):
                recorded, now = getattr(row, f"{role}_fingerprint", None), installed(kind, name)
                if now is not None and recorded != now:
                    why.append(f"{role} {name}: code {recorded or 'unrecorded'} -> installed {now}")
        reasons.append("; ".join(why) or None)
    out["stale_reason"] = reasons
    out["stale"] = [r is not None for r in reasons]
    return out
