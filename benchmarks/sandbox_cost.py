"""What the sandbox costs a match (issue 17): seconds and share of the match.

    python benchmarks/sandbox_cost.py --dataset digits --repeats 3
    python benchmarks/sandbox_cost.py --dataset fashion_mnist --repeats 2

For each defender (a repairing one, a filtering one, a detecting one) against badnets, on one
ARENA_HOME whose attacked and honest models are trained first (so the figures are the defense
stage's): the whole match, warm, once with the defender in its sandbox (the mode in force, as
`arena doctor` says) and once run in the driver's process as before the sandbox (the benchmark
alone can ask for that: it marks the defender a baseline). Both ask a filter the same fair way
(two rounds of mixed batches), so the difference is the sandbox's: the worker's start, the data
sent both ways, a fork per filter batch. (The fair asking costs a filter
a second round in both runs; it is the evaluator's, not the sandbox's.) One JSON row per (defender, repeat) in results/sandbox-cost-<dataset>.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
DEFENDERS = ("fine_pruning", "strip", "neural_cleanse")


def play(defender: str, dataset: str, home: Path, in_process: bool) -> tuple[float, dict[str, Any]]:
    from arena import match
    from arena.store import ArtifactStore

    original = match.is_baseline
    if in_process:
        match.is_baseline = lambda strategy: True  # type: ignore[assignment]  # the benchmark's comparison, never the harness's
    try:
        start = time.perf_counter()
        result = match.run_match(match.prepare("badnets", defender, dataset=dataset), ArtifactStore(home)).to_json()
        return time.perf_counter() - start, result
    finally:
        match.is_baseline = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--defenders", nargs="*", default=list(DEFENDERS))
    parser.add_argument("--home", help="an ARENA_HOME to reuse (its attacked models), else a fresh one")
    args = parser.parse_args()

    import torch

    from arena.sandbox import sandbox_mode

    torch.set_num_threads(1)
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="sandbox-cost-"))
    os.environ["ARENA_HOME"] = str(home)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sandbox-cost-{args.dataset}.jsonl"
    play("none", args.dataset, home, in_process=True)  # trains the attacked and the honest model once
    for defender in args.defenders:
        for repeat in range(args.repeats):
            sandboxed, result = play(defender, args.dataset, home, in_process=False)
            direct, direct_result = play(defender, args.dataset, home, in_process=True)
            same = result["defended"] == direct_result["defended"] and result["utility"] == direct_result["utility"]
            row = {
                "dataset": args.dataset,
                "defender": defender,
                "repeat": repeat,
                "mode": sandbox_mode(),
                "match_seconds_sandboxed": round(sandboxed, 3),
                "match_seconds_in_process": round(direct, 3),
                "sandbox_seconds": round(sandboxed - direct, 3),
                "sandbox_share_of_match": round((sandboxed - direct) / sandboxed, 4),
                "same_figures": same,
                "defended": result["defended"],
            }
            print(json.dumps(row), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
