"""Reproducibility figures (issue: numbers a reviewer can trust).

    python benchmarks/reproducibility.py hashes  --dataset digits --attacker badnets --defender fine_pruning
    python benchmarks/reproducibility.py timing  --repeats 3
    python benchmarks/reproducibility.py detection benchmarks/suites/detection-fashion_mnist.yaml

`hashes`: the same match through `arena match` pinned to 1 core and to 2 cores (`taskset`), and
inside a one-match Ray tournament, each on a fresh ARENA_HOME: the attacked model's SHA-256 and
the defended figures of each. Writes results/reproducibility-hashes-<dataset>.json.

`timing`: the headline match (`arena match --attacker pruning_aware --defender fine_pruning`)
cold on digits, a fresh ARENA_HOME per repeat, wall time of the whole command. Appends to
results/reproducibility-timing.jsonl.

`detection`: plays the suite (`arena tournament`, resumable, on $ARENA_HOME) and writes each
verdict-giving defender's model-level detection (TPR, FPR, AUROC, target hit) computed from the
rows by arena's metrics module: results/<suite>.json, plus the raw rows: results/<suite>-rows.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ARENA = str(Path(sys.executable).parent / "arena")


def _env(home: str) -> dict[str, str]:
    return {**os.environ, "ARENA_HOME": home, "RAY_AUTH_MODE": "disabled"}


def _run(cmd: list[str], home: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(home), capture_output=True, text=True)
    return time.perf_counter() - start, proc


def hashes(args: argparse.Namespace) -> None:
    rows = []
    match = [ARENA, "match", "--attacker", args.attacker, "--defender", args.defender, "--dataset", args.dataset, "--seed", str(args.seed), "--json", "--quiet"]
    taskset = shutil.which("taskset")
    for cores in ("0", "0,1"):
        with tempfile.TemporaryDirectory() as home:
            wall, proc = _run(([taskset, "-c", cores] if taskset else []) + match, home)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            r = json.loads(proc.stdout)
            rows.append({"entry": "arena match", "cores": cores, "sha256": r["artifact_sha256"], "defended_ca": r["defended"]["ca"], "defended_asr": r["defended"]["asr"], "utility": r["utility"], "numerics": r["numerics"], "wall_s": wall})
    with tempfile.TemporaryDirectory() as home:
        suite = Path(home) / "suite.yaml"
        suite.write_text(json.dumps({"name": "one", "dataset": args.dataset, "seeds": [args.seed], "attackers": [args.attacker], "defenders": [args.defender]}))
        wall, proc = _run([ARENA, "tournament", str(suite), "--cpus", "2", "--json", "--quiet"], home)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        (r,) = json.loads(proc.stdout)
        rows.append({"entry": "arena tournament (Ray worker)", "cores": "0,1", "sha256": r["artifact_sha256"], "defended_ca": r["defended_ca"], "defended_asr": r["defended_asr"], "utility": r["utility"], "numerics": json.loads(r["numerics"]), "wall_s": wall})
    report = {"dataset": args.dataset, "attacker": args.attacker, "defender": args.defender, "seed": args.seed, "rows": rows, "one_hash": len({r["sha256"] for r in rows}) == 1}
    out = RESULTS / f"reproducibility-hashes-{args.dataset}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("| entry point | cores | attacked model SHA-256 | defended CA | defended ASR | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['entry']} | {r['cores']} | `{r['sha256'][:16]}` | {r['defended_ca']:.4f} | {r['defended_asr']:.4f} | {r['wall_s']:.1f} |")
    print(f"one hash: {report['one_hash']}  ->  {out}")


def timing(args: argparse.Namespace) -> None:
    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as home:
            wall, proc = _run([ARENA, "match", "--attacker", "pruning_aware", "--defender", "fine_pruning", "--json", "--quiet"], home)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            walls.append(wall)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {"command": "arena match --attacker pruning_aware --defender fine_pruning (cold, digits)", "code": commit, "walls_s": walls, "best_s": min(walls), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    with (RESULTS / "reproducibility-timing.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def detection(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from arena.leaderboard import detection_table, label_frame
    from arena.results import ResultsStore
    from arena.store import arena_home
    from arena.suite import load_suite

    suite = load_suite(args.suite)
    home = str(arena_home())
    proc = subprocess.run([ARENA, "tournament", args.suite, "--quiet", "--json"], env=_env(home), stdout=subprocess.DEVNULL)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"tournament failed with exit code {proc.returncode}")
    frame = ResultsStore(Path(home) / "results.sqlite").frame(suite.name)
    frame = label_frame(frame[frame.match_key.isin({m.key for m in suite.matches()})])
    table = detection_table(frame)
    frame.drop(columns=["updated"]).to_csv(RESULTS / f"{suite.name}-rows.csv", index=False)
    (RESULTS / f"{suite.name}.json").write_text(json.dumps({"suite": suite.name, "seeds": list(suite.seeds), "detection": table}, indent=1) + "\n")
    print("| defender | backdoored models | honest models | TPR | FPR | AUROC | target hit |\n|---|---|---|---|---|---|---|")
    for d, r in sorted(table.items()):
        print(f"| {d} | {r['backdoored']} | {r['honest']} | {r['tpr']:.3f} | {r['fpr']:.3f} | {r['auroc']:.3f} | {r['target_hit']:.3f} |")
    cols = ["attacker_label", "defender_label", "seed", "verdict_flagged", "verdict_score", "verdict_labels", "deployed", "attacked_asr", "defended_ca", "defended_asr", "seconds_defense"]
    print(frame[cols].sort_values(cols[:3]).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("hashes")
    h.add_argument("--dataset", default="digits")
    h.add_argument("--attacker", default="badnets")
    h.add_argument("--defender", default="fine_pruning")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=hashes)
    t = sub.add_parser("timing")
    t.add_argument("--repeats", type=int, default=3)
    t.set_defaults(func=timing)
    d = sub.add_parser("detection")
    d.add_argument("suite")
    d.set_defaults(func=detection)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
