"""The GPU match grid (issue #16): what one card does against 2 CPU cores.

Each part runs the real CLI (`arena match`, `arena tournament`) in a child process on a fresh
ARENA_HOME, so every figure is cold (no model in the store) and includes process start and
imports; it writes one JSON row per measurement to OUT (a JSON-lines file), with the machine's
description (CPU count, GPU model, torch and CUDA versions).

    python benchmarks/gpu_grid.py headline OUT --device cuda          # one headline match on Fashion-MNIST, cold
    python benchmarks/gpu_grid.py pack OUT --packs 1 2 4 8 --seeds 8   # matches per hour with N matches per card
    python benchmarks/gpu_grid.py refresh OUT --device cuda           # the published fashion_mnist suite, cold
    python benchmarks/gpu_grid.py refresh OUT --device cpu --cpus 2   # the same on 2 CPU cores, for the ratio
    python benchmarks/gpu_grid.py compare GPU_ROWS.json CPU_ROWS.json  # the two refreshes cell by cell

`pack` plays a suite of badnets against no defense over `--seeds` seeds (2 models per seed:
honest and attacked) with `--gpus-per-task 1/N`, sampling `nvidia-smi` every 0.5 s for the card's
utilisation and memory and the memory of each worker process. `refresh` plays
leaderboards/fashion_mnist/suite.yaml with `arena tournament` (the refresh's work, without
publishing), and copies its rows to OUT's folder as a CSV for the side-by-side comparison with
the published CPU rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEADLINE = ["match", "--attacker", "pruning_aware", "--defender", "fine_pruning", "--dataset", "fashion_mnist", "--json", "--quiet"]


def machine() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return out


def arena(args: list[str], home: Path, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "arena", *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, "ARENA_HOME": str(home), "RAY_AUTH_MODE": "disabled", **(env or {})}
    )
    return time.perf_counter() - start, proc


def write(out: Path, row: dict[str, Any]) -> None:
    with out.open("a") as handle:
        handle.write(json.dumps({**row, "host": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    print(json.dumps(row), flush=True)


class GpuSampler:
    """nvidia-smi every `period` s in a thread: card utilisation and memory, memory per process."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples, self.per_process = period, [], {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _query(self, args: list[str]) -> list[list[str]]:
        try:
            text = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.is_set():
            for util, mem in self._query(["--query-gpu=utilization.gpu,memory.used"])[:1]:
                self.samples.append((float(util), float(mem)))
            for pid, mem in self._query(["--query-compute-apps=pid,used_memory"]):
                self.per_process[pid] = max(self.per_process.get(pid, 0.0), float(mem))
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"nvidia_smi": "no samples"}
        utils, mems = [s[0] for s in self.samples], [s[1] for s in self.samples]
        busy = [u for u in utils if u > 0]
        return {
            "gpu_util_mean_pct": round(sum(utils) / len(utils), 1),
            "gpu_util_mean_busy_pct": round(sum(busy) / len(busy), 1) if busy else 0.0,
            "gpu_mem_peak_mib": max(mems),
            "worker_mem_peak_mib": sorted(self.per_process.values(), reverse=True),
            "samples": len(utils),
        }


def headline(args: argparse.Namespace) -> None:
    for run in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="arena-gpu-headline-") as home:
            seconds, proc = arena([*HEADLINE, "--device", args.device, "--seed", str(args.seed), *(["--amp"] if args.amp else [])], Path(home))
        if proc.returncode != 0:
            sys.exit(f"arena match failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout)
        write(args.out, {"part": "headline", "device": args.device, "amp": args.amp, "run": run, "seed": args.seed, "wall_s": round(seconds, 2), "seconds": r["seconds"],
                         "honest_ca": r["honest"]["ca"], "attacked": {k: r["attacked"][k] for k in ("ca", "asr")}, "defended": {k: r["defended"][k] for k in ("ca", "asr")},
                         "utility": r["utility"], "artifact_sha256": r["artifact_sha256"], "numerics": r["numerics"]})


def pack_suite(seeds: int, epochs: int | None) -> str:
    lines = ["name: gpu-pack", "dataset: fashion_mnist", f"seeds: {list(range(seeds))}", "attackers: [none, badnets]", "defenders: [none]"]
    if epochs:
        lines.append(f"epochs: {epochs}")
    return "\n".join(lines) + "\n"


def tournament(suite: Path, home: Path, extra: list[str]) -> tuple[float, list[dict[str, Any]], str]:
    seconds, proc = arena(["tournament", str(suite), "--json", "--quiet", *extra], home)
    if proc.returncode not in (0, 3):
        sys.exit(f"arena tournament failed:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    return seconds, json.loads(lines[-1]) if lines else [], proc.stderr


def pack(args: argparse.Namespace) -> None:
    for n in args.packs:
        with tempfile.TemporaryDirectory(prefix="arena-gpu-pack-") as tmp:
            suite = Path(tmp) / "suite.yaml"
            suite.write_text(pack_suite(args.seeds, args.epochs))
            with GpuSampler() as sampler:
                seconds, rows, _ = tournament(suite, Path(tmp) / "home", ["--gpus-per-task", f"{1 / n:g}", "--cpus", str(args.cpus)])
        ok = sum(r["status"] == "ok" for r in rows)
        write(args.out, {"part": "pack", "packed": n, "gpus_per_task": 1 / n, "matches": len(rows), "ok": ok, "models_trained": 2 * args.seeds, "wall_s": round(seconds, 1),
                         "matches_per_hour": round(3600 * ok / seconds, 1), "models_per_hour": round(3600 * 2 * args.seeds / seconds, 1), **sampler.summary()})


def refresh(args: argparse.Namespace) -> None:
    suite = REPO / "leaderboards" / "fashion_mnist" / "suite.yaml"
    extra = ["--device", args.device] + (["--gpus-per-task", f"{args.gpus_per_task:g}"] if args.device != "cpu" else []) + (["--cpus", str(args.cpus)] if args.cpus else [])
    with tempfile.TemporaryDirectory(prefix="arena-gpu-refresh-") as tmp:
        with GpuSampler() as sampler:
            seconds, rows, _ = tournament(suite, Path(tmp) / "home", extra)
    ok = sum(r["status"] == "ok" for r in rows)
    csv = args.out.with_name(f"{args.out.stem}-refresh-{args.device}-rows.json")
    csv.write_text(json.dumps(rows))
    write(args.out, {"part": "refresh", "device": args.device, "gpus_per_task": args.gpus_per_task if args.device != "cpu" else 0, "cpus": args.cpus, "matches": len(rows), "ok": ok,
                     "wall_s": round(seconds, 1), "rows": csv.name, **(sampler.summary() if args.device != "cpu" else {})})


COMPARED = ("attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility")


def compare(args: argparse.Namespace) -> None:
    """Cell by cell: the GPU row against the CPU row of the same match, beside the CPU's own
    spread over seeds for the same pair (how far one seed's number is from the other's)."""
    gpu = {r["match_key"]: r for r in json.loads(args.gpu_rows.read_text())}
    cpu = {r["match_key"]: r for r in json.loads(args.cpu_rows.read_text())}
    keys = sorted(set(gpu) & set(cpu))
    pair = lambda r: (r["attacker"], json.dumps(r["attacker_params"]), r["defender"], json.dumps(r["defender_params"]))  # noqa: E731
    spread: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in cpu.values():
        seeds = [c for c in cpu.values() if pair(c) == pair(r)]
        spread[pair(r)] = {m: max(c[m] for c in seeds) - min(c[m] for c in seeds) for m in COMPARED}
    cells = []
    for k in keys:
        g, c = gpu[k], cpu[k]
        gaps = {m: abs(g[m] - c[m]) for m in COMPARED}
        cells.append({"match_key": k, "attacker": g["attacker"], "defender": g["defender"], "defender_params": g["defender_params"], "seed": g["seed"],
                      "gpu": {m: g[m] for m in COMPARED}, "cpu": {m: c[m] for m in COMPARED}, "gap": gaps, "cpu_seed_spread": spread[pair(c)],
                      "within_seed_spread": all(gaps[m] <= spread[pair(c)][m] + 1e-9 for m in COMPARED)})
    summary = {"part": "compare", "cells": len(cells), "within_seed_spread": sum(c["within_seed_spread"] for c in cells),
               "largest_gap": {m: max(c["gap"][m] for c in cells) for m in COMPARED},
               "median_gap": {m: sorted(c["gap"][m] for c in cells)[len(cells) // 2] for m in COMPARED},
               "gpu_rows": args.gpu_rows.name, "cpu_rows": args.cpu_rows.name}
    args.out.write_text(json.dumps({"summary": summary, "cells": cells}, indent=1))
    print(json.dumps(summary))
    for c in cells:
        if not c["within_seed_spread"]:
            print(f"  outside: {c['attacker']} vs {c['defender']} {c['defender_params'] or ''} seed {c['seed']}: "
                  + ", ".join(f"{m} gpu {c['gpu'][m]:.3f} cpu {c['cpu'][m]:.3f} (spread {c['cpu_seed_spread'][m]:.3f})" for m in COMPARED if c["gap"][m] > c["cpu_seed_spread"][m] + 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    h = sub.add_parser("headline")
    h.add_argument("out", type=Path)
    h.add_argument("--device", default="cuda")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--repeats", type=int, default=1)
    h.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast)")
    h.set_defaults(func=headline)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    p.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="training budget (default: the dataset's)")
    p.add_argument("--cpus", type=int, default=16)
    p.set_defaults(func=pack)
    r = sub.add_parser("refresh")
    r.add_argument("out", type=Path)
    r.add_argument("--device", default="cuda")
    r.add_argument("--gpus-per-task", type=float, default=0.25)
    r.add_argument("--cpus", type=int, default=None)
    r.set_defaults(func=refresh)
    c = sub.add_parser("compare")
    c.add_argument("gpu_rows", type=Path)
    c.add_argument("cpu_rows", type=Path)
    c.add_argument("out", type=Path)
    c.set_defaults(func=compare)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
