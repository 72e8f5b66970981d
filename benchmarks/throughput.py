"""Where a refresh's seconds go (issue #18: profile first), one JSON row per measurement.

    python benchmarks/throughput.py loop --dataset fashion_mnist            # arena's training loop against a bare PyTorch loop
    python benchmarks/throughput.py defenses --dataset fashion_mnist --home DIR   # every registered defender on one attacked model
    python benchmarks/throughput.py estimate --dataset fashion_mnist        # the full refresh's core-seconds, from the rows above
    python benchmarks/throughput.py stages --home DIR                       # a cell's harness cost by stage (tournament view)
    python benchmarks/throughput.py trigger-search --home DIR               # Neural Cleanse's search alone (PYTHONPATH=OTHER_CHECKOUT: that code's)

`loop`: one epoch of `badnets_cnn` on the dataset's attacker split, with the same batch order,
by `arena.training.fit` and by the plainest loop PyTorch allows (Adam, cross-entropy, indexing
the tensors; no channels-last copy, no hooks); both from the same initial weights, one torch
thread. The ratio is the loop's overhead.

`defenses`: one attacked model (badnets, seed 0, defaults) and its honest twin trained once into
HOME (the cold stage's seconds recorded); then every registered defender at its defaults plays
that model warm, as a refresh plays a cell (sandboxed worker, fair filter asking, evaluation):
the match's wall seconds, the defense stage's own seconds and the difference (the harness's
share: worker start, transfer, evaluation).

`estimate`: a refresh's cost in core-seconds from those rows: trainings (attackers × seeds +
honest per seed) × the measured training seconds (the attack's own recipe may differ: an
estimate, said so) plus cells × each defender's measured wall seconds.

Rows go to results/throughput-<what>-<dataset>.jsonl with the commit and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "unknown"


def _write(what: str, dataset: str, row: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    row = {"commit": _commit(), "machine": platform.machine(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **row}
    with (RESULTS / f"throughput-{what}-{dataset}.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def loop(dataset: str, samples: int | None, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from arena.data import load_dataset
    from arena.match import task_for
    from arena.models import build_model
    from arena.protocol import Split
    from arena.training import fit

    torch.set_num_threads(1)
    data = load_dataset(dataset)
    train = data.train if samples is None else Split(data.train.x[:samples], data.train.y[:samples])
    task = task_for(dataset, "badnets_cnn", 1)
    initial = build_model(task, torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in initial.state_dict().items()}

    def arena_loop() -> float:
        model = build_model(task)
        model.load_state_dict(state)
        start = time.perf_counter()
        fit(model, train, epochs=1, lr=1e-3, generator=torch.Generator().manual_seed(1), batch_size=128)
        return time.perf_counter() - start

    def bare_loop() -> float:
        model = build_model(task)
        model.load_state_dict(state)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = train.x, train.y
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return time.perf_counter() - start

    for repeat in range(repeats):
        bare, ours = bare_loop(), arena_loop()  # alternated, so drift in the machine's speed hits both
        _write("loop", dataset, {"repeat": repeat, "samples": len(train), "batch_size": 128, "bare_s": round(bare, 3), "arena_s": round(ours, 3), "overhead": round(ours / bare - 1, 4)})


def defenses(dataset: str, home: Path, names: list[str] | None) -> None:
    import torch

    from arena import match
    from arena.registry import DEFENDERS
    from arena.store import ArtifactStore

    torch.set_num_threads(1)
    os.environ["ARENA_HOME"] = str(home)
    store = ArtifactStore(home)
    start = time.perf_counter()
    first = match.run_match(match.prepare("badnets", "none", dataset=dataset), store).to_json()
    _write("defenses", dataset, {"stage": "cold: honest and badnets models trained", "wall_s": round(time.perf_counter() - start, 2), "seconds": first["seconds"]})
    for name in names or [n for n in DEFENDERS.names() if "/" not in n]:
        start = time.perf_counter()
        try:
            result = match.run_match(match.prepare("badnets", name, dataset=dataset), store).to_json()
        except Exception as exc:  # a defender that fails here is a row too
            _write("defenses", dataset, {"defender": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        wall = time.perf_counter() - start
        own = result["seconds"]["defense"]
        _write(
            "defenses",
            dataset,
            {
                "defender": name,
                "wall_s": round(wall, 2),
                "defense_s": round(own, 2),
                "harness_s": round(wall - own, 2),
                "not_applicable": result["defended"].get("not_applicable"),
                "defended_asr": result["defended"]["asr"],
            },
        )


def trigger_search(dataset: str, home: Path, repeats: int) -> None:
    """Neural Cleanse's trigger search alone (every label, defaults) on the badnets model of
    `defenses`' HOME, in this process, one torch thread: the code that `import arena` finds
    (run it with PYTHONPATH set to another checkout to time that one)."""
    import torch

    import arena
    from arena import match
    from arena.data import load_dataset, player_splits
    from arena.models import build_model
    from arena.registry import DEFENDERS
    from arena.store import ArtifactStore
    from arena.strategy import DefenseContext

    torch.set_num_threads(1)
    os.environ["ARENA_HOME"] = str(home)
    store = ArtifactStore(home)
    prepared = match.prepare("badnets", "neural_cleanse", dataset=dataset)
    model, _ = store.load(prepared.spec.attack.key, lambda _: build_model(prepared.task))
    clean = player_splits(load_dataset(dataset), 0.05).clean
    nc = DEFENDERS.create("neural_cleanse")
    for repeat in range(repeats):
        ctx = DefenseContext(prepared.task, clean, torch.Generator().manual_seed(repeat))
        start = time.perf_counter()
        triggers = nc.reverse_all(model, ctx)
        seconds = time.perf_counter() - start
        _write("trigger-search", dataset, {"repeat": repeat, "neural_cleanse_version": nc.version, "arena_from": str(Path(arena.__file__).parent.parent),
                                            "labels": len(triggers), "steps": nc.params["nc_steps"], "batch_size": nc.params["nc_batch_size"], "seconds": round(seconds, 2),
                                            "l1": [round(t.l1, 2) for t in triggers]})


def stages(dataset: str, home: Path, repeats: int) -> None:
    """A tournament's per-cell harness cost, by stage, on `defenses`' warm HOME: the attack
    stage of a stored model (load and evaluate; a tournament runs it once per model, `arena
    match` once per match) and the defense stage of a `none` cell (what every cell pays beside
    its defense: the splits, the model from the store, scoring)."""
    import torch

    from arena import match
    from arena.store import ArtifactStore

    torch.set_num_threads(1)
    os.environ["ARENA_HOME"] = str(home)
    store = ArtifactStore(home)
    prepared = match.prepare("badnets", "none", dataset=dataset)
    for repeat in range(repeats):
        start = time.perf_counter()
        attacked = match.attack_stage(prepared.spec.attack, store)
        honest = match.attack_stage(match.honest_spec(prepared.spec.attack), store)
        attack_s = time.perf_counter() - start
        start = time.perf_counter()
        match.defense_stage(prepared.spec, attacked, honest, store)
        _write("stages", dataset, {"repeat": repeat, "two_attack_stages_warm_s": round(attack_s, 2), "defense_stage_none_s": round(time.perf_counter() - start, 2)})


def estimate(dataset: str, seeds: int) -> None:
    """A refresh's core-seconds as a tournament plays it: each model trained and its attack stage
    (load, evaluate) run once; each cell pays its defense stage, which is the `defenses` row's
    match wall less the two attack stages `arena match` ran beside it (`stages` rows)."""
    from arena.registry import ATTACKERS, DEFENDERS

    def read(what: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (RESULTS / f"throughput-{what}-{dataset}.jsonl").read_text().splitlines()]

    rows = read("defenses")
    cold = [r for r in rows if r.get("stage", "").startswith("cold")][-1]
    attack_stages = min(r["two_attack_stages_warm_s"] for r in read("stages"))
    per_defender = {r["defender"]: max(r["wall_s"] - attack_stages, r["defense_s"]) for r in rows if "defender" in r and "wall_s" in r}
    training = cold["seconds"]["attack"]  # one attacked model's training (badnets' recipe)
    attackers = [n for n in ATTACKERS.names() if "/" not in n]
    defenders = [n for n in DEFENDERS.names() if "/" not in n]
    cells = len(attackers) * len(defenders) * seeds
    models = len(attackers) * seeds  # every attacker but `none` per seed, and the honest model (attacker `none`) per seed
    train_s = models * (training + attack_stages / 2)
    defend_s = seeds * len(attackers) * sum(per_defender.get(d, 0.0) for d in defenders)
    _write(
        "estimate",
        dataset,
        {
            "attackers": len(attackers),
            "defenders": len(defenders),
            "seeds": seeds,
            "cells": cells,
            "models": models,
            "training_core_s": round(train_s),
            "defense_core_s": round(defend_s),
            "core_s_per_cell": round((train_s + defend_s) / cells, 1),
            "hours_on_2_cores": round((train_s + defend_s) / 2 / 3600, 2),
            "per_defender_cell_s": {d: round(v, 1) for d, v in sorted(per_defender.items(), key=lambda kv: -kv[1])},
            "defenders_not_measured": [d for d in defenders if d not in per_defender],
            "note": "badnets' training seconds stand for every attacker's; one badnets model's defense seconds for every attacker's; no Ray overhead; "
            "cells measured before the published model's evaluation was reused (an upper bound for cells that deploy it)",
        },
    )


def breakdown(home: Path, suite: str, log: Path) -> None:
    """Where a played refresh's seconds went, from its store's rows (read-only, so it can run
    beside the refresh): training (each attacked model once, as recorded when it was trained),
    each defender's own seconds, the harness (a cell's wall less its defense: the sandboxed
    worker, transfers, evaluation; the attack stages' evaluation is not in the rows) and, given the segments' log of
    `full_refresh.sh`, the wall clock and what is left of it (Ray's scheduling and idle cores)."""
    import sqlite3

    db = sqlite3.connect(f"file:{home / 'results.sqlite'}?mode=ro", uri=True)
    records = [(status, json.loads(result) if result else None) for status, result in db.execute("SELECT status, result FROM matches WHERE suite = ?", (suite,))]
    played = [r for status, r in records if status == "ok" and r and "total" in r.get("seconds", {})]
    trained: dict[str, float] = {}
    per_defender: dict[str, dict[str, float]] = {}
    for r in played:
        if not r.get("cached", True):  # this match trained its attacked model
            trained[r["artifact_sha256"]] = r["seconds"]["attack"]
        d = per_defender.setdefault(r["defender"]["name"], {"cells": 0, "defense_s": 0.0, "total_s": 0.0})
        d["cells"] += 1
        d["defense_s"] += r["seconds"]["defense"]
        d["total_s"] += r["seconds"]["total"]
    total = sum(d["total_s"] for d in per_defender.values())
    defense = sum(d["defense_s"] for d in per_defender.values())
    training = sum(trained.values())
    row: dict[str, Any] = {
        "suite": suite,
        "rows": len(records),
        "played_here": len(played),
        "models_trained_here": len(trained),
        "training_core_s": round(training),
        "defense_core_s": round(defense),
        "harness_core_s": round(total - defense),  # a tournament trains in an attack stage of its own: a cell's total is its defense stage
        "per_defender": {
            k: {
                "cells": v["cells"],
                "defense_s": round(v["defense_s"]),
                "defense_s_per_cell": round(v["defense_s"] / v["cells"], 1),
                "harness_s_per_cell": round((v["total_s"] - v["defense_s"]) / v["cells"], 1),
            }
            for k, v in sorted(per_defender.items(), key=lambda kv: -kv[1]["total_s"])
        },
    }
    if log.exists():
        segments = [line.split() for line in log.read_text().splitlines() if " wall_s " in line]
        wall = sum(int(s[s.index("wall_s") + 1]) for s in segments)
        cores = int(segments[-1][segments[-1].index("cores") - 1]) if segments else 0
        row.update(segments=len(segments), wall_s=wall, cores=cores, unaccounted_core_s=round(wall * cores - total - training))
    _write("breakdown", suite, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("loop")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("defenses")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--home", default=None)
    p.add_argument("--defenders", nargs="*", default=None)
    p = sub.add_parser("trigger-search")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--home", required=True)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("stages")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--home", required=True)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("estimate")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--seeds", type=int, default=3)
    p = sub.add_parser("breakdown")
    p.add_argument("--suite", default="fashion_mnist")
    p.add_argument("--home", default=None, help="default: .arena/full-refresh-SUITE, full_refresh.sh's store")
    p.add_argument("--log", default=None, help="default: benchmarks/results/full-refresh-SUITE.log")
    args = parser.parse_args()
    if args.what == "loop":
        loop(args.dataset, args.samples, args.repeats)
    elif args.what == "stages":
        stages(args.dataset, Path(args.home), args.repeats)
    elif args.what == "trigger-search":
        trigger_search(args.dataset, Path(args.home), args.repeats)
    elif args.what == "defenses":
        defenses(args.dataset, Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="throughput-")), args.defenders)
    elif args.what == "breakdown":
        home = Path(args.home or f".arena/full-refresh-{args.suite}")
        breakdown(home, args.suite, Path(args.log) if args.log else RESULTS / f"full-refresh-{args.suite}.log")
    else:
        estimate(args.dataset, args.seeds)


if __name__ == "__main__":
    main()
