"""MM-BD on the honest models of a refreshed board: why it flags clean Fashion-MNIST models.

    python benchmarks/mm_bd_honest.py --home .arena/full-refresh-fashion_mnist --dataset fashion_mnist [--steps 300 1000]

For each seed's honest model in HOME (the `none` attacker's model, as the board scored it), MM-BD's
per-class maximum margins and its test (Gamma null over the other classes, p = 1 - F(r)^K), at the
default step budget (the released code's 300) and at the others given: the defense's own seed as
the harness derives it, so the first budget reproduces the board's verdict (its -log10 p is the
row's verdict_score). One torch thread. Rows: results/mm_bd-honest-<dataset>.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="ARENA_HOME of the refreshed board (its models)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000], help="MM-BD step budgets to run (default: the code's 300, and 1000)")
    args = parser.parse_args()

    import math

    import torch
    from arena.defenders.mm_bd import margin_test  # the defense's own test, on its own statistics

    from arena import match
    from arena.data import load_dataset, player_splits
    from arena.models import build_model
    from arena.registry import DEFENDERS
    from arena.store import ArtifactStore
    from arena.strategy import DefenseContext

    torch.set_num_threads(1)
    os.environ["ARENA_HOME"] = str(args.home)
    store = ArtifactStore(args.home)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    clean = player_splits(load_dataset(args.dataset), 0.05).clean
    RESULTS.mkdir(exist_ok=True)
    for seed in args.seeds:
        for steps in args.steps:
            prepared = match.prepare("none", "mm_bd", defender_params={"steps": steps}, dataset=args.dataset, seed=seed)
            loaded = store.load(prepared.spec.attack.key, lambda _, task=prepared.task: build_model(task))
            if loaded is None:
                raise SystemExit(f"no honest model of seed {seed} in {args.home}: run the board's refresh there first")
            model, manifest = loaded
            defender = DEFENDERS.create("mm_bd", {"steps": steps})
            generator = torch.Generator().manual_seed(match.defense_seed(prepared.spec, manifest["sha256"]))
            start = time.perf_counter()
            statistics = defender.statistics(model, DefenseContext(prepared.task, clean, generator))
            test = margin_test(statistics)
            row = {
                "commit": commit, "machine": platform.machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset": args.dataset, "seed": seed,
                "model_sha256": manifest["sha256"], "steps": steps, "seconds": round(time.perf_counter() - start, 1),
                "statistics": [round(v, 3) for v in test.statistics], "suspect": test.suspect, "p_value": test.p_value,
                "score": round(max(0.0, -math.log10(max(test.p_value, 1e-300))), 3), "flagged": test.p_value < defender.params["theta"],
            }
            with (RESULTS / f"mm_bd-honest-{args.dataset}.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
