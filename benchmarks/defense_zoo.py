"""Quality and cost figures of the defense zoo, part 2 (issue #15).

    python benchmarks/defense_zoo.py run --dataset fashion_mnist --seeds 0 1 2 --home DIR \
        [--defenders NAME ...] [--attackers NAME ...] [--architecture badnets_cnn] [--clean-budget 0.05]
    python benchmarks/defense_zoo.py table [--dataset fashion_mnist]
    python benchmarks/defense_zoo.py epoch-cost [--dataset fashion_mnist]

`run` plays each defender against each attacker at their defaults, per seed, in one ARENA_HOME
(each attacked model is trained once and reused by every defender). A defender that cannot act
on the architecture (ANP and CLP need batch normalisation) is skipped there: its rows come from
a run with `--architecture preact_resnet`. Rows are appended to
benchmarks/results/defense-zoo-<dataset>.jsonl as they finish; a rerun skips rows it has.
`table` prints, per defender and attacker, defended CA and ASR (mean ± sd over seeds), the
detection TPR/FPR/AUROC of verdict-giving defenders, the defense's seconds per model and the
clean samples it used. `epoch-cost` times one training epoch of each architecture and appends
it to benchmarks/results/architectures-<dataset>.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFENDERS = ["abs", "mesa", "i_bau", "anp", "clp", "nad", "mm_bd", "bti_dbf", "ft_sam"]
ATTACKERS = ["none", "badnets", "pruning_aware", "all_to_all", "blended"]


def _rows(dataset: str) -> list[dict]:
    path = RESULTS / f"defense-zoo-{dataset}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(args: argparse.Namespace) -> None:
    os.environ["ARENA_HOME"] = args.home or tempfile.mkdtemp(prefix="arena-defzoo-")
    sys.path.insert(0, str(Path(__file__).parents[1]))
    import torch

    from arena.match import prepare, run_match
    from arena.registry import DEFENDERS as REGISTRY
    from arena.store import ArtifactStore

    torch.set_num_threads(args.threads)
    store = ArtifactStore()
    out = RESULTS / f"defense-zoo-{args.dataset}.jsonl"
    done = {(r["attacker"], r["defender"], r["architecture"], r["seed"]) for r in _rows(args.dataset) if r.get("clean_budget", 0.05) == args.clean_budget}
    for seed in args.seeds:
        for attacker in args.attackers:
            for defender in args.defenders:
                if (attacker, defender, args.architecture, seed) in done:
                    continue
                prepared = prepare(attacker, defender, dataset=args.dataset, seed=seed, architecture=args.architecture, clean_budget=args.clean_budget)
                r = run_match(prepared, store).to_json()
                if r["defended"]["not_applicable"]:
                    print(f"skip {attacker} vs {defender} on {args.architecture}: n/a", file=sys.stderr)
                    continue
                data_free = bool(getattr(REGISTRY.get(defender), "data_free", False))
                row = {
                    "attacker": attacker,
                    "defender": defender,
                    "architecture": args.architecture,
                    "clean_budget": args.clean_budget,
                    "seed": seed,
                    "honest_ca": r["honest"]["ca"],
                    "attacked_ca": r["attacked"]["ca"],
                    "attacked_asr": r["attacked"]["asr"],
                    "stealthy": r["stealthy"],
                    "defended_ca": r["defended"]["ca"],
                    "defended_asr": r["defended"]["asr"],
                    "frr": r["defended"].get("frr"),
                    "verdict": r["defended"]["verdict"],
                    "targets": r["attacked"]["targets"],
                    "seconds_defense": r["seconds"]["defense"],
                    "seconds_attack": r["seconds"]["attack"],
                    "clean_samples_used": 0 if data_free else r["clean_samples"],
                    "match_key": r["match_key"],
                    "fingerprints": r["fingerprints"],
                }
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"seed {seed} {attacker:>13} vs {defender:<8} [{args.architecture}] attacked {row['attacked_ca']:.3f}/{row['attacked_asr']:.3f} "
                    f"defended {row['defended_ca']:.3f}/{row['defended_asr']:.3f} verdict {row['verdict']} {row['seconds_defense']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )


def _ms(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.mean(values):.3f}" if len(values) == 1 else f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from arena.metrics import detection_summary

    rows = _rows(args.dataset)
    print("| defender | architecture | attacker | seeds | attacked CA / ASR | defended CA | defended ASR | verdict flagged | s / model | clean samples |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    def order(key: tuple[str, str, str]) -> tuple:
        d, arch, a = key
        return (DEFENDERS.index(d) if d in DEFENDERS else 99, arch, ATTACKERS.index(a) if a in ATTACKERS else 99, a)

    keys = sorted({(r["defender"], r["architecture"], r["attacker"]) for r in rows}, key=order)
    for d, arch, a in keys:
        group = [r for r in rows if (r["defender"], r["architecture"], r["attacker"]) == (d, arch, a)]
        flagged = [r["verdict"]["flagged"] for r in group if r["verdict"] is not None]
        print(
            f"| {d} | {arch} | {a} | {len(group)} | {_ms([r['attacked_ca'] for r in group])} / {_ms([r['attacked_asr'] for r in group])} | {_ms([r['defended_ca'] for r in group])} | "
            f"{_ms([r['defended_asr'] for r in group])} | {f'{sum(flagged)}/{len(flagged)}' if flagged else '–'} | {_ms([r['seconds_defense'] for r in group])} | {group[0]['clean_samples_used']} |"
        )
    print()
    print("Detection over models (backdoored: every stealthy attacked model but `none`; honest: `none`):")
    print()
    print("| defender | architecture | backdoored | honest | TPR | FPR | AUROC | target hit |")
    print("|---|---|---|---|---|---|---|---|")
    for d, arch in sorted({(r["defender"], r["architecture"]) for r in rows if r["verdict"] is not None}):
        group = [r for r in rows if (r["defender"], r["architecture"]) == (d, arch) and r["verdict"] is not None and (r["attacker"] == "none" or r["stealthy"])]
        s = detection_summary(
            [r["verdict"]["flagged"] for r in group],
            [r["verdict"]["score"] for r in group],
            [r["attacker"] != "none" for r in group],
            [r["verdict"]["labels"] for r in group],
            [r["targets"] for r in group],
        )
        print(f"| {d} | {arch} | {s['backdoored']} | {s['honest']} | {s['tpr']:.2f} | {s['fpr']:.2f} | {s['auroc']:.2f} | {s['target_hit']:.2f} |")
    comparison(rows)


# BackdoorBench's published ASR reductions (points), CIFAR-10, PreAct-ResNet-18, 10% poisoning, 5% clean
# data for the defense: backdoorbench/backdoorbench.github.io @ b98eab4, leaderboard-cifar10.html
# (copied with their CA/ASR before and after into results/backdoorbench-published.md). FT-SAM, ABS,
# MM-BD, BTI-DBF and MESA have no published BadNets/Blended rows there.
BACKDOORBENCH_REDUCTION = {
    "anp": {"badnets": 94.30, "blended": 97.73},
    "i_bau": {"badnets": 93.74, "blended": 49.39},
    "nad": {"badnets": 92.89, "blended": 2.23},
    "clp": {"badnets": 17.47, "blended": 0.18},
}


def comparison(rows: list[dict]) -> None:
    """Our mean ASR reduction against BadNets and Blended beside BackdoorBench's, per defense."""
    print()
    print("ASR reduction in points (attacked ASR − defended ASR, mean over seeds), ours on this dataset beside BackdoorBench's CIFAR-10 PreAct-ResNet-18:")
    print()
    print("| defender | architecture | ours: badnets | ours: blended | ours: average | BackdoorBench: badnets | blended | average | gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    for d, published in BACKDOORBENCH_REDUCTION.items():
        for arch in sorted({r["architecture"] for r in rows if r["defender"] == d}):
            ours = {}
            for a in ("badnets", "blended"):
                group = [100 * (r["attacked_asr"] - r["defended_asr"]) for r in rows if (r["defender"], r["architecture"], r["attacker"]) == (d, arch, a)]
                ours[a] = statistics.mean(group) if group else None
            if None in ours.values():
                continue
            mine, theirs = statistics.mean(ours.values()), statistics.mean(published.values())
            print(
                f"| {d} | {arch} | {ours['badnets']:.1f} | {ours['blended']:.1f} | {mine:.1f} | {published['badnets']:.2f} | {published['blended']:.2f} | {theirs:.2f} | {mine - theirs:+.1f} |"
            )


def epoch_cost(args: argparse.Namespace) -> None:
    """Seconds of one training epoch over the attacker's split, per architecture, through the one loop."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    import torch

    from arena.data import load_dataset, player_splits
    from arena.match import task_for
    from arena.models import build_model
    from arena.training import fit

    torch.set_num_threads(args.threads)
    data = player_splits(load_dataset(args.dataset), 0.05).attacker
    with (RESULTS / f"architectures-{args.dataset}.jsonl").open("a") as f:
        for architecture in ("badnets_cnn", "preact_resnet"):
            task = task_for(args.dataset, architecture, None)
            model = build_model(task, torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            fit(model, data, epochs=1, lr=1e-3, batch_size=128, generator=torch.Generator().manual_seed(0))
            seconds = time.perf_counter() - t0
            parameters = sum(p.numel() for p in model.parameters())
            row = {"architecture": architecture, "dataset": args.dataset, "samples": len(data), "threads": args.threads, "seconds_per_epoch": round(seconds, 2), "parameters": parameters}
            f.write(json.dumps(row) + "\n")
            print(row)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="fashion_mnist")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--home", default=None)
    r.add_argument("--defenders", nargs="+", default=DEFENDERS)
    r.add_argument("--attackers", nargs="+", default=ATTACKERS)
    r.add_argument("--architecture", default="badnets_cnn")
    r.add_argument("--clean-budget", type=float, default=0.05, help="the defender's clean share (0.05, the default; the digits tests use 0.1)")
    r.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("table")
    t.add_argument("--dataset", default="fashion_mnist")
    e = sub.add_parser("epoch-cost")
    e.add_argument("--dataset", default="fashion_mnist")
    e.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    {"run": run, "table": table, "epoch-cost": epoch_cost}[args.command](args)


if __name__ == "__main__":
    main()
