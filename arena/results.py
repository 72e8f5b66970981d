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

from arena.errors import StoreError
from arena.specs import MatchSpec

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

    def finished(self, suite: str) -> set[str]:
        """Keys of the matches of `suite` that ended `ok`: a rerun skips them."""
        return {row[0] for row in self.db.execute("SELECT key FROM matches WHERE suite = ? AND status = 'ok'", (suite,))}

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
                    "seed": attack.seed,
                    "status": row["status"],
                    "honest_ca": r.get("honest", {}).get("ca"),
                    "attacked_ca": r.get("attacked", {}).get("ca"),
                    "attacked_asr": r.get("attacked", {}).get("asr"),
                    "defended_ca": r.get("defended", {}).get("ca"),
                    "defended_asr": r.get("defended", {}).get("asr"),
                    "utility": r.get("utility"),
                    "stealthy": r.get("stealthy"),
                    "verdict_flagged": (r.get("defended", {}).get("verdict") or {}).get("flagged"),
                    "seconds_attack": r.get("seconds", {}).get("attack"),
                    "seconds_defense": r.get("seconds", {}).get("defense"),
                    "clean_samples": r.get("clean_samples"),
                    "artifact_sha256": r.get("artifact_sha256"),
                    "arena_version": r.get("provenance", {}).get("arena_version"),
                    "git_commit": r.get("provenance", {}).get("git_commit"),
                    "error": row["error"],
                    "attempts": row["attempts"],
                    "updated": row["updated"],
                }
            )
        return pd.DataFrame.from_records(records)
