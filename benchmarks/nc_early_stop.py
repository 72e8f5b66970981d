"""Neural Cleanse's early stop (issue #18), an experiment not adopted: what it saves and what it changes.

    git apply benchmarks/patches/neural-cleanse-early-stop.patch
    python benchmarks/nc_early_stop.py --home .arena/full-refresh-fashion_mnist [--attackers badnets blended ...] [--seeds 0 1 2]
    git apply -R benchmarks/patches/neural-cleanse-early-stop.patch

The patch gives Neural Cleanse the released code's early stop per label (version 5): once λ has
been both raised and lowered, a label whose smallest successful mask has not shrunk below 99 % of
its best for `early_stop_patience` steps leaves the batched search. For each attacked
Fashion-MNIST model the home's store holds (attackers at their defaults, the suite's seeds), the
trigger search runs twice in this process on one torch thread, from the same generator seed:
every label for every step (`early_stop_patience` 0, today's search) and with the early stop. A
row per model and setting: seconds, the last step reported, the reversed masks' L1 norms, the
anomaly index, the labels flagged at the default threshold and the attack's target labels, so
detection can be compared model by model. Rows go to results/nc-early-stop-fashion_mnist.jsonl
with the commit (the patched tree's, which is not on main).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()


def _targets(value: Any) -> set[int]:
    """The all-to-one target labels of a manifest's triggers (their parts included)."""
    if isinstance(value, list):
        return set().union(*(_targets(v) for v in value)) if value else set()
    if isinstance(value, dict):
        found = {int(value["target"])} if value.get("kind") == "all_to_one" else set()
        return found.union(*(_targets(v) for v in value.values() if isinstance(v, (dict, list))))
    return set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True)
    parser.add_argument("--attackers", nargs="*", default=["none", "badnets", "blended", "wanet", "large_trigger", "all_to_all", "adaptive_patch"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = parser.parse_args()

    import torch

    from arena import match
    from arena.data import load_dataset, player_splits
    from arena.models import build_model
    from arena.outliers import anomaly_indices
    from arena.registry import DEFENDERS
    from arena.store import ArtifactStore
    from arena.strategy import DefenseContext

    if "early_stop_patience" not in DEFENDERS.get("neural_cleanse").space:
        raise SystemExit("Neural Cleanse has no early_stop_patience parameter: apply benchmarks/patches/neural-cleanse-early-stop.patch first (see this script's docstring).")
    torch.set_num_threads(1)
    os.environ["ARENA_HOME"] = str(args.home)
    store = ArtifactStore(Path(args.home))
    clean = player_splits(load_dataset("fashion_mnist"), 0.05).clean
    RESULTS.mkdir(exist_ok=True)
    for attacker in args.attackers:
        for seed in args.seeds:
            prepared = match.prepare(attacker, "neural_cleanse", dataset="fashion_mnist", seed=seed)
            try:
                model, manifest = store.load(prepared.spec.attack.key, lambda _, task=prepared.task: build_model(task))
            except Exception as exc:  # not trained in this store yet, or not the plain architecture
                print(f"skip {attacker} seed {seed}: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            targets = sorted(_targets(manifest.get("triggers", [])))
            for setting, params in (("every step", {"early_stop_patience": 0}), ("early stop", {})):
                nc = DEFENDERS.create("neural_cleanse", params)
                steps_run: list[int] = []
                ctx = DefenseContext(prepared.task, clean, torch.Generator().manual_seed(seed), progress=lambda stage, done, total, steps_run=steps_run: steps_run.append(done))
                start = time.perf_counter()
                triggers = nc.reverse_all(model, ctx)
                seconds = time.perf_counter() - start
                index = anomaly_indices(torch.tensor([t.l1 for t in triggers]))
                flagged = [t.label for t in triggers if float(index[t.label]) > nc.params["threshold"]]
                row: dict[str, Any] = {
                    "commit": _commit(),
                    "neural_cleanse_version": nc.version,
                    "attacker": attacker,
                    "seed": seed,
                    "setting": setting,
                    "seconds": round(seconds, 2),
                    "last_step": steps_run[-1] if steps_run else None,
                    "l1": [round(t.l1, 2) for t in triggers],
                    "anomaly_index": [round(float(v), 2) for v in index],
                    "flagged": flagged,
                    "targets": targets,
                }
                with (RESULTS / "nc-early-stop-fashion_mnist.jsonl").open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row))


if __name__ == "__main__":
    main()
