"""The results store: one row per match in an embedded SQLite database, written by one process.

Failures are rows (status `error` / `timeout` / `skipped`) with their error text. A rerun skips
rows whose status is `ok`, so an interrupted tournament resumes where it stopped. Tables are
derived from the rows with pandas.
"""

from __future__ import annotations

import json
import sqlite3
import time
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


class ResultsStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the results database {self.path} ({exc}). Set ARENA_HOME to a writable directory.") from None

    def close(self) -> None:
        self.db.close()

    def put(self, suite: str, spec: MatchSpec, status: str, result: dict[str, Any] | None = None, error: str | None = None, attempts: int = 1) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
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
        cursor = self.db.execute("SELECT key, spec, status, result, error, attempts, updated FROM matches WHERE suite = ? ORDER BY key", (suite,))
        out = []
        for key, spec, status, result, error, attempts, updated in cursor:
            out.append({"key": key, "spec": json.loads(spec), "status": status, "result": None if result is None else json.loads(result), "error": error, "attempts": attempts, "updated": updated})
        return out

    def suites(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT suite FROM matches ORDER BY suite")]

    def frame(self, suite: str) -> pd.DataFrame:
        """One tidy row per match: strategy labels, seed, status, every metric, costs, provenance."""
        records = []
        for row in self.rows(suite):
            spec = MatchSpec.from_dict(row["spec"])
            r = row["result"] or {}
            verdict = r.get("defended", {}).get("verdict") or {}
            attack = spec.attack
            records.append(
                {
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
            )
        return pd.DataFrame.from_records(records)


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
