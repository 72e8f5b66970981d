"""Speed and robustness figures of tournaments (the Ray issue).

    python benchmarks/tournament.py SUITE_YAML [--cpus 2]

On a fresh ARENA_HOME per measurement:
1. the tournament with 2 Ray workers, then with 1: wall time, speed-up, attacked models trained;
2. the same matches one by one with `arena match` (each a fresh process, sharing one store, as a
   user would script them): wall time, and the ratio to the tournament;
3. a resume: the driver is killed (SIGKILL) once a third of the rows are in, the same command is
   rerun, and the final table is compared with the uninterrupted run's.
Per-task Ray overhead: (tournament wall x workers - sum of task seconds) / tasks.
Writes benchmarks/results/tournament-<suite>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ARENA = str(Path(sys.executable).parent / "arena")


def _env(home: str) -> dict[str, str]:
    return {**os.environ, "ARENA_HOME": home, "RAY_AUTH_MODE": "disabled"}


def _tournament(suite: str, home: str, cpus: int) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    proc = subprocess.run([ARENA, "tournament", suite, "--cpus", str(cpus), "--json", "--quiet"], env=_env(home), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise SystemExit(proc.stderr)
    return wall, json.loads(proc.stdout)


def _table(rows: list[dict]) -> list[tuple]:
    keys = ("match_key", "status", "attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility")
    return sorted(tuple(r[k] for k in keys) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from arena.suite import load_suite

    suite = load_suite(args.suite)
    report: dict = {"suite": suite.name, "matches": len(suite.matches()), "attackers": len(suite.attackers), "defenders": len(suite.defenders), "seeds": len(suite.seeds)}

    for cpus in (2, 1):
        home = tempfile.mkdtemp(prefix="arena-tour-")
        wall, rows = _tournament(args.suite, home, cpus)
        trained = len(list(Path(home, "models").glob("*.json")))
        task_seconds = sum((r["seconds_defense"] or 0) for r in rows) + sum(
            json.loads(Path(home, "models", f).read_text())["seconds_train"] for f in os.listdir(Path(home, "models"))
        )
        report[f"workers_{cpus}"] = {"wall_s": wall, "models_trained": trained, "ok": sum(r["status"] == "ok" for r in rows), "task_seconds": task_seconds}
        if cpus == 2:
            reference = _table(rows)
        print(json.dumps({f"workers_{cpus}": report[f"workers_{cpus}"]}), file=sys.stderr, flush=True)
    report["speedup_2_over_1"] = report["workers_1"]["wall_s"] / report["workers_2"]["wall_s"]
    tasks = report["workers_1"]["models_trained"] + report["matches"]
    report["overhead_per_task_s"] = (report["workers_1"]["wall_s"] - report["workers_1"]["task_seconds"]) / tasks

    # one by one with `arena match`
    home = tempfile.mkdtemp(prefix="arena-seq-")
    start = time.perf_counter()
    for m in suite.matches():
        cmd = [ARENA, "match", "--attacker", m.attack.attacker.name, "--defender", m.defender.name, "--dataset", suite.dataset, "--seed", str(m.attack.seed), "--clean-budget", str(suite.clean_budget), "--epochs", str(suite.epochs), "--quiet", "--json"]
        for role, spec in (("attacker", m.attack.attacker), ("defender", m.defender)):
            for k, v in spec.params:
                cmd += ["--set", f"{role}.{k}={v}"]
        subprocess.run(cmd, env=_env(home), check=True, capture_output=True)
    report["one_by_one_wall_s"] = time.perf_counter() - start
    report["one_by_one_over_tournament"] = report["one_by_one_wall_s"] / report["workers_2"]["wall_s"]
    print(json.dumps({"one_by_one_wall_s": report["one_by_one_wall_s"]}), file=sys.stderr, flush=True)

    # resume after a killed driver
    home = tempfile.mkdtemp(prefix="arena-resume-")
    proc = subprocess.Popen([ARENA, "tournament", args.suite, "--cpus", "2", "--quiet", "--json"], env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = Path(home, "results.sqlite")
    target = max(1, report["matches"] // 3)
    killed_at = None
    while proc.poll() is None:
        time.sleep(0.5)
        if db.exists():
            try:
                n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM matches").fetchone()[0]
            except sqlite3.Error:
                continue
            if n >= target:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = n
                break
    proc.wait()
    subprocess.run(["ray", "stop", "--force"], capture_output=True)  # the killed driver's local cluster
    wall, rows = _tournament(args.suite, home, 2)
    report["resume"] = {"killed_after_rows": killed_at, "rerun_wall_s": wall, "final_table_equals_uninterrupted": _table(rows) == reference}
    print(json.dumps({"resume": report["resume"]}), file=sys.stderr, flush=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"tournament-{suite.name}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
