"""The results store: one row per match in an embedded SQLite database, written by one process.

Failures are rows (status `error` / `timeout` / `skipped`) with their error text. A rerun skips
rows whose status is `ok`, so an interrupted tournament resumes where it stopped. Tables are
derived from the rows with pandas.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
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

    def finished(self, suite: str, numerics: str = "cpu", models: Callable[[str], str | None] | None = None) -> set[str]:
        """Keys of the matches of `suite` that ended `ok` under the installed strategies' code and
        under the numerics class `numerics` (arena.device.numerics_class): a rerun of that class
        skips them, and re-runs stale ones (see `mark_stale`) and those of another class. With
        `models` (see `other_model_rows`), a row that scored another model than the one held
        here for its attack is not finished either."""
        frame = self.frame(suite)
        if frame.empty:
            return set()
        frame = mark_stale(frame)
        ours = frame.numerics.map(lambda n: numerics_class(json.loads(n) if isinstance(n, str) else None) == numerics)
        done = set(frame.match_key[(frame.status == "ok") & ~frame.stale & ours])
        return done if models is None else done - self.other_model_rows(suite, models)

    def other_model_rows(self, suite: str, models: Callable[[str], str | None]) -> set[str]:
        """Keys of the `ok` rows of `suite` whose attacked model is not the one this ARENA_HOME
        holds for their attack: `models(attack_key)` is the SHA-256 of the held model (None: none
        held, nothing to compare). Such a row was imported from a published board whose machine
        trained that model otherwise (the same numerics label, other CPU kernels); kept, it would
        put two models of one attack on one board (docs/design.md §7)."""
        other = set()
        for row in self.rows(suite):
            scored = (row["result"] or {}).get("artifact_sha256")
            if row["status"] != "ok" or not scored:
                continue
            try:
                attack_key = MatchSpec.from_dict(row["spec"]).attack.key
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._damaged_row(suite, row["key"], exc) from None
            held = models(attack_key)
            if held is not None and held != scored:
                other.add(row["key"])
        return other

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

    def import_rows(self, suite: str, rows: list[dict[str, Any]], updated: str | None = None) -> int:
        """Add rows read by `read_published` whose cells this store does not hold yet (a local row,
        newer or not, is never replaced); returns how many were added. One transaction. `updated`:
        when the rows were made (the published board's date), not when they were imported."""
        stamp = updated or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with self._sql():
            held = {row[0] for row in self.db.execute("SELECT key FROM matches WHERE suite = ?", (suite,))}
            new = list({row["key"]: row for row in rows if row["key"] not in held}.values())
            self.db.execute("BEGIN")
            try:
                self.db.executemany(
                    "INSERT INTO matches (suite, key, spec, status, result, error, attempts, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(suite, r["key"], json.dumps(r["spec"]), r["status"], None if r["result"] is None else json.dumps(r["result"]), r["error"], r["attempts"], stamp) for r in new],
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return len(new)

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


# ---------------------------------------------------------------------------------------------
# Published rows (a leaderboard's results.csv) as a starting state


def _cell(value: str) -> str | None:
    return None if value == "" else value


def _number(value: str) -> float | int | None:
    if value == "":
        return None
    number = float(value)
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def _flag(value: str) -> bool | None:
    if value == "":
        return None
    if value not in ("True", "False"):
        raise ValueError(f"{value!r} is not True or False")
    return value == "True"


def _json_or_none(value: str) -> Any:
    return None if value == "" else json.loads(value)


def published_row(record: dict[str, str]) -> dict[str, Any]:
    """One line of a published results.csv back as the store row it was written from (the inverse
    of `ResultsStore._record` over the fields the CSV keeps). The spec is rebuilt from its columns
    and must hash to the line's match key: a line whose key does not follow from its spec is
    refused, so an edited row can not stand in for a cell it is not."""
    attacker_params, defender_params = json.loads(record["attacker_params"]), json.loads(record["defender_params"])
    if not isinstance(attacker_params, dict) or not isinstance(defender_params, dict):
        raise ValueError("its parameters are not JSON objects")
    spec = MatchSpec.from_dict(
        {
            "attack": {
                "attacker": {"name": record["attacker"], "version": record["attacker_version"], "params": attacker_params},
                "dataset": record["dataset"],
                "architecture": record["architecture"],
                "epochs": int(record["epochs"]),
                "clean_budget": float(record["clean_budget"]),
                "seed": int(record["seed"]),
            },
            "defender": {"name": record["defender"], "version": record["defender_version"], "params": defender_params},
        }
    )
    if spec.key != record["match_key"]:
        raise ValueError(f"its match_key {record['match_key'][:12]}… is not the hash of its spec ({spec.key[:12]}…)")
    status = record["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    result = None
    if status == "ok":
        verdict = None
        if record["verdict_labels"] != "":
            verdict = {"flagged": _flag(record["verdict_flagged"]), "score": _number(record["verdict_score"]), "labels": json.loads(record["verdict_labels"])}
        defended: dict[str, Any] = {"ca": _number(record["defended_ca"]), "asr": _number(record["defended_asr"]), "verdict": verdict}
        for field in ("deployed", "not_applicable", "fallback_sha256"):
            defended[field] = _cell(record[field])
        result = {
            "honest": {"ca": _number(record["honest_ca"])},
            "attacked": {"ca": _number(record["attacked_ca"]), "asr": _number(record["attacked_asr"]), "targets": _json_or_none(record["targets"])},
            "defended": defended,
            "utility": _number(record["utility"]),
            "stealthy": _flag(record["stealthy"]),
            "seconds": {"attack": _number(record["seconds_attack"]), "defense": _number(record["seconds_defense"])},
            "clean_samples": _number(record["clean_samples"]),
            "artifact_sha256": _cell(record["artifact_sha256"]),
            "fingerprints": {role: _cell(record[f"{role}_fingerprint"]) for role in ("attacker", "honest", "defender")},
            "numerics": _json_or_none(record["numerics"]),
            "provenance": {"arena_version": _cell(record["arena_version"]), "git_commit": _cell(record["git_commit"])},
        }
        _check_figures(result)
    attempts = int(record["attempts"]) if record["attempts"] else 1
    return {"key": spec.key, "spec": spec.to_dict(), "status": status, "result": result, "error": _cell(record["error"]), "attempts": attempts}


def _check_figures(result: dict[str, Any]) -> None:
    """An `ok` row's figures as the evaluator writes them: rates in [0, 1], utility = CA − ASR of
    the deployed system. (A row edited to a consistent false figure passes: `verify` replays cells.)"""
    rates = {"honest CA": result["honest"]["ca"], "attacked CA": result["attacked"]["ca"], "attacked ASR": result["attacked"]["asr"],
             "defended CA": result["defended"]["ca"], "defended ASR": result["defended"]["asr"]}  # fmt: skip
    for what, value in rates.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"its {what} is {value!r}, not a rate in [0, 1]")
    utility = result["utility"]
    if not isinstance(utility, (int, float)) or not math.isfinite(utility) or abs(utility - (rates["defended CA"] - rates["defended ASR"])) > 1e-6:
        raise ValueError(f"its utility {utility!r} is not its defended CA minus its defended ASR")


def read_published(path: Path, suite: str | None = None) -> list[dict[str, Any]]:
    """The rows of a published results.csv (of `suite` when given), each checked as `published_row`
    does; any line that is not one is a StoreError naming the file, the line and why."""
    import csv

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = sorted(set(PUBLISHED_COLUMNS) - set(reader.fieldnames or []))
            if missing:
                raise StoreError(f"{path} is not a published results.csv: it lacks the columns {', '.join(missing)}. A leaderboard refresh writes such a file; nothing was read.")
            rows: list[dict[str, Any]] = []
            lines: dict[tuple[str, str], int] = {}
            for line, record in enumerate(reader, start=2):
                if suite is not None and record["suite"] != suite:
                    raise StoreError(f"{path}, line {line}: the row is of suite {record['suite']!r}, not {suite!r}. Nothing was read.")
                try:
                    row = published_row(record)
                except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
                    raise StoreError(f"{path}, line {line}, is not a sound published row ({exc}). Nothing was read; restore the file from the repository (git checkout -- {path}).") from None
                if (record["suite"], row["key"]) in lines:
                    raise StoreError(f"{path}, line {line}, repeats the cell of line {lines[record['suite'], row['key']]} (one row per match). Nothing was read; restore the file from the repository.")
                lines[record["suite"], row["key"]] = line
                rows.append(row | {"suite": record["suite"]})
            return rows
    except OSError as exc:
        raise StoreError(f"Cannot read {path} ({exc.strerror or exc}).") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StoreError(f"{path} is not a readable CSV file ({exc}). Nothing was read.") from None


# the columns `published_row` reads (a published results.csv has these and the two labels)
PUBLISHED_COLUMNS = (
    "suite", "match_key", "attacker", "attacker_version", "attacker_params", "defender", "defender_version", "defender_params", "dataset",
    "architecture", "epochs", "clean_budget", "seed", "status", "honest_ca", "attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility",
    "stealthy", "verdict_flagged", "verdict_score", "verdict_labels", "targets", "deployed", "not_applicable", "seconds_attack", "seconds_defense",
    "clean_samples", "artifact_sha256", "fallback_sha256", "attacker_fingerprint", "honest_fingerprint", "defender_fingerprint", "numerics",
    "arena_version", "git_commit", "error", "attempts",
)  # fmt: skip


def published_frame(path: Path, suite: str, updated: str | None = None) -> pd.DataFrame:
    """A published results.csv as the frame `ResultsStore.frame` would give for its rows."""
    return pd.DataFrame.from_records([ResultsStore._record(suite, row | {"updated": updated}) for row in read_published(path, suite)])
