"""Verify cells of a refresh still under way (issue #18): `arena leaderboard verify` on the rows a
store holds now, before the suite publishes them.

    python benchmarks/verify_store.py --home .arena/full-refresh-fashion_mnist --suite fashion_mnist \\
        --where attacker=badnets,defender=fine_tuning,seed=0 --cells 1

The store's rows of the suite are written as `publish` writes a board's results.csv (the same
columns and labels) into a temporary board folder beside a copy of the suite file; `arena
leaderboard verify` then re-plays `--cells` of them, drawn with `--draw-seed`, from an empty
ARENA_HOME, exactly as it re-plays a published board. `--where` keeps only the rows whose columns
equal the values given. The store is opened read-only, so this can run beside the refresh.
The report goes to results/verify-<suite>-store.jsonl, one JSON line per run with the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True, help="the refresh's ARENA_HOME")
    parser.add_argument("--suite", required=True, help="suite name (folder under leaderboards/)")
    parser.add_argument("--cells", type=int, default=5)
    parser.add_argument("--draw-seed", type=int, default=0)
    parser.add_argument("--where", default="", help="column=value,... rows to draw from")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from arena.leaderboard import label_frame
    from arena.results import ResultsStore
    from arena.suite import load_suite, suite_frame

    work = Path(tempfile.mkdtemp(prefix="arena-verify-store-"))
    snapshot = work / "results.sqlite"  # a consistent copy: the refresh may be writing
    source = sqlite3.connect(f"file:{args.home / 'results.sqlite'}?mode=ro", uri=True)
    target = sqlite3.connect(snapshot)
    source.backup(target)
    source.close()
    target.close()
    board = work / "leaderboards" / args.suite
    board.mkdir(parents=True)
    shutil.copy(REPO / "leaderboards" / args.suite / "suite.yaml", board / "suite.yaml")
    suite = load_suite(board / "suite.yaml")
    frame = suite_frame(suite, ResultsStore(snapshot))
    tidy = label_frame(frame).drop(columns=["updated"]).sort_values(["attacker_label", "defender_label", "seed"])
    for clause in filter(None, args.where.split(",")):
        column, _, value = clause.partition("=")
        if column not in tidy.columns:
            raise SystemExit(f"--where {clause!r}: a clause is COLUMN=VALUE with a column of the results table ({', '.join(sorted(tidy.columns))}).")
        tidy = tidy[tidy[column].astype(str) == value]
    tidy.to_csv(board / "results.csv", index=False)
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "arena"), "leaderboard", "verify", str(board / "suite.yaml"), "--cells", str(args.cells), "--seed", str(args.draw_seed), "--json"],
        env={**os.environ, "ARENA_HOME": str(work / "home")}, capture_output=True, text=True,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    row = {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "home": str(args.home), "where": args.where, "rows_drawn_from": len(tidy),
           "wall_s": round(time.perf_counter() - start, 1), **json.loads(proc.stdout)}
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"verify-{args.suite}-store.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
