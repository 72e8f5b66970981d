"""How long `arena nash` takes on random zero-sum games as strategies accumulate.

    python benchmarks/nash_scaling.py --sizes 1000 3000 [--seed 0] [--out benchmarks/results/nash-scaling.jsonl]

Each size n: a random n x n matrix with entries uniform in [-1, 1] (seeded), written as a CSV,
then `arena nash FILE --json` in a fresh process, timed end to end (reading the CSV, the LP, the
maximum-entropy refinement of both mixtures, the exploitability check). One JSON row per size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from arena.provenance import numerics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/nash-scaling.jsonl"))
    args = parser.parse_args()
    for n in args.sizes:
        matrix = np.random.default_rng(args.seed).uniform(-1, 1, (n, n))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"random-{n}.csv"
            lines = ["," + ",".join(f"a{j}" for j in range(n))] + [f"d{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(matrix)]
            path.write_text("\n".join(lines) + "\n")
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "arena", "nash", str(path), "--json"], capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - start
        result = json.loads(out.stdout)
        row = {
            "size": n,
            "seed": args.seed,
            "seconds": round(seconds, 2),
            "value": result["value"],
            "exploitability": result["exploitability"],
            "defender_support": sum(p > 0 for p in result["defender"].values()),
            "attacker_support": sum(p > 0 for p in result["attacker"].values()),
            "command": f"arena nash random-{n}.csv --json",
            "numerics": numerics(),
        }
        print(json.dumps(row))
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
