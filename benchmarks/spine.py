"""Quality and speed figures of the spine (issue: `arena match` end to end).

    python benchmarks/spine.py quality --dataset fashion_mnist --seeds 0 1 2
    python benchmarks/spine.py timing

`quality` plays every built-in attacker against every built-in defender per seed in one fresh
ARENA_HOME (each attacked model is trained once and reused by all defenders) and writes the
rows to benchmarks/results/quality-<dataset>.json plus a Markdown summary on stdout.
`timing` runs the headline CLI command cold (empty store) and warm, on digits and on
fashion_mnist, and writes benchmarks/results/timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAIRS = [
    ("badnets", "none"),
    ("badnets", "pruning"),
    ("badnets", "fine_tuning"),
    ("badnets", "fine_pruning"),
    ("pruning_aware", "none"),
    ("pruning_aware", "pruning"),
    ("pruning_aware", "fine_tuning"),
    ("pruning_aware", "fine_pruning"),
]


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def quality(dataset: str, seeds: list[int], home: str | None) -> None:
    os.environ["ARENA_HOME"] = home or tempfile.mkdtemp(prefix="arena-bench-")
    from arena.match import prepare, run_match
    from arena.store import ArtifactStore

    store = ArtifactStore()
    rows = []
    for seed in seeds:
        for attacker, defender in PAIRS:
            result = run_match(prepare(attacker, defender, dataset=dataset, seed=seed), store).to_json()
            rows.append(result)
            print(
                f"seed {seed} {attacker:>14} vs {defender:<13} honest {result['honest']['ca']:.4f} "
                f"attacked {result['attacked']['ca']:.4f}/{result['attacked']['asr']:.4f} "
                f"defended {result['defended']['ca']:.4f}/{result['defended']['asr']:.4f} "
                f"attack {result['seconds']['attack']:.1f}s defense {result['seconds']['defense']:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quality-{dataset}.json").write_text(json.dumps(rows, indent=1))
    print("| attacker | defender | honest CA | attacked CA | attacked ASR | defended CA | defended ASR | CA − honest | utility | stealthy | attack s | defense s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for attacker, defender in PAIRS:
        sel = [r for r in rows if r["attacker"]["name"] == attacker and r["defender"]["name"] == defender]
        col = lambda f: _mean_sd([f(r) for r in sel])  # noqa: E731
        print(
            f"| {attacker} | {defender} | {col(lambda r: r['honest']['ca'])} | {col(lambda r: r['attacked']['ca'])} | "
            f"{col(lambda r: r['attacked']['asr'])} | {col(lambda r: r['defended']['ca'])} | {col(lambda r: r['defended']['asr'])} | "
            f"{col(lambda r: r['defended']['ca'] - r['honest']['ca'])} | {col(lambda r: r['utility'])} | "
            f"{sum(r['stealthy'] for r in sel)}/{len(sel)} | {col(lambda r: r['seconds']['attack'])} | {col(lambda r: r['seconds']['defense'])} |"
        )


def timing() -> None:
    arena = str(Path(sys.executable).parent / "arena")
    out = []
    for dataset in ("digits", "fashion_mnist"):
        home = tempfile.mkdtemp(prefix="arena-timing-")
        for state in ("cold", "warm"):
            cmd = [arena, "match", "--attacker", "pruning_aware", "--defender", "fine_pruning", "--dataset", dataset, "--json", "--quiet"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ARENA_HOME": home}, check=True)
            wall = time.perf_counter() - start
            result = json.loads(proc.stdout)
            row = {"dataset": dataset, "state": state, "wall_s": wall, "cached": result["cached"], "utility": result["utility"], "seconds": result["seconds"]}
            print(json.dumps(row), file=sys.stderr, flush=True)
            out.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "timing.json").write_text(json.dumps(out, indent=1))
    print("| dataset | store | wall s (whole command) | attacked model from store |")
    print("|---|---|---|---|")
    for row in out:
        print(f"| {row['dataset']} | {row['state']} | {row['wall_s']:.1f} | {row['cached']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--dataset", default="fashion_mnist")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--home", default=None, help="ARENA_HOME to use (default: a fresh temporary one)")
    sub.add_parser("timing")
    args = parser.parse_args()
    if args.what == "quality":
        quality(args.dataset, args.seeds, args.home)
    else:
        timing()


if __name__ == "__main__":
    main()
