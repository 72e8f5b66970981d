"""Quality and cost figures of the attack zoo (issue: the attack zoo of the seeds).

    python benchmarks/attacks.py --dataset fashion_mnist --seeds 0 1 2 [--home DIR] [--only NAME ...]

Plays every attack configuration below against defender `none` (and, for the defense-zoo
issue, `all_to_all` against `strip`) per seed, in one ARENA_HOME so each attacked model is
trained once. Rows are appended to benchmarks/results/attacks-<dataset>.jsonl as they finish
(an interrupted run keeps what it measured and a rerun with the same --home skips nothing
but trains nothing twice); a Markdown table of means ± sd goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# (label, attacker, params, defender)
CONFIGS: list[tuple[str, str, dict, str]] = [
    ("clean_label", "clean_label", {}, "none"),
    ("clean_label (all target images, ε 0.3)", "clean_label", {"poison_rate": 1.0, "epsilon": 0.3}, "none"),
    ("all_to_all (poison 0.2)", "all_to_all", {"poison_rate": 0.2}, "none"),
    ("all_to_all (poison 0.2) vs strip", "all_to_all", {"poison_rate": 0.2}, "strip"),
    ("all_to_all", "all_to_all", {}, "none"),
    ("all_to_all vs strip", "all_to_all", {}, "strip"),
    ("badnets vs strip", "badnets", {}, "strip"),
    ("trigger_combination", "trigger_combination", {}, "none"),
    ("multi_trigger (MTSTA)", "multi_trigger", {}, "none"),
    ("multi_trigger (MTMTA)", "multi_trigger", {"mode": "multi_target"}, "none"),
    ("feature_space (nashville)", "feature_space", {}, "none"),
    ("feature_space (gotham)", "feature_space", {"filter": "gotham"}, "none"),
    ("blended", "blended", {}, "none"),
    ("trojan_nn", "trojan_nn", {}, "none"),
    # the paper's inverted-data retraining, with the settings first tried (a 6x6 trigger)
    (
        "trojan_nn (inverted data)",
        "trojan_nn",
        {"retrain_data": "inverted", "trigger_area": 0.046, "neuron_gain": 3.0, "retrain_samples": 100, "retrain_epochs": 20, "retrain_lr": 1e-4},
        "none",
    ),
    ("trojannet", "trojannet", {}, "none"),
    ("boosted", "boosted", {}, "none"),
    ("badnets (random target)", "badnets", {"goal": "untargeted"}, "none"),
    ("badnets vs fine_tuning", "badnets", {}, "fine_tuning"),
    ("boosted vs fine_tuning", "boosted", {}, "fine_tuning"),
    # ---- attack zoo, part 2 (issue #14): each at its defaults against none ...
    ("post_it", "post_it", {}, "none"),
    ("large_trigger (band)", "large_trigger", {}, "none"),
    ("tact", "tact", {}, "none"),
    ("adaptive_blend", "adaptive_blend", {}, "none"),
    ("adaptive_patch", "adaptive_patch", {}, "none"),
    ("strip_evading", "strip_evading", {}, "none"),
    ("badnets (squeeze_robust)", "badnets", {"squeeze_robust": True}, "none"),
    ("wanet", "wanet", {}, "none"),
    ("reflection", "reflection", {}, "none"),
    ("input_aware", "input_aware", {}, "none"),
    ("sbl", "sbl", {}, "none"),
    ("clean_label v2 (robust surrogate)", "clean_label", {}, "none"),
    # ... and each adaptive attack against the defense it targets, beside its non-adaptive parent there
    ("strip_evading vs strip", "strip_evading", {}, "strip"),
    ("badnets vs strip (zoo 2)", "badnets", {}, "strip"),
    ("badnets (squeeze_robust) vs feature_squeezing", "badnets", {"squeeze_robust": True}, "feature_squeezing"),
    ("badnets vs feature_squeezing", "badnets", {}, "feature_squeezing"),
    ("sbl vs fine_tuning", "sbl", {}, "fine_tuning"),
    ("badnets vs fine_tuning (zoo 2)", "badnets", {}, "fine_tuning"),
    ("sbl vs fine_pruning", "sbl", {}, "fine_pruning"),
    ("badnets vs fine_pruning", "badnets", {}, "fine_pruning"),
    ("adaptive_patch vs neural_cleanse", "adaptive_patch", {}, "neural_cleanse"),
    ("badnets vs neural_cleanse", "badnets", {}, "neural_cleanse"),
    ("adaptive_blend vs neural_cleanse", "adaptive_blend", {}, "neural_cleanse"),
    ("blended vs neural_cleanse", "blended", {}, "neural_cleanse"),
    ("adaptive_blend vs strip", "adaptive_blend", {}, "strip"),
    ("blended vs strip", "blended", {}, "strip"),
    ("tact vs strip", "tact", {}, "strip"),
    ("large_trigger (band) vs neural_cleanse", "large_trigger", {}, "neural_cleanse"),
    ("post_it vs neural_cleanse", "post_it", {}, "neural_cleanse"),
]
# the zoo-2 configurations, for `--only zoo2` (their labels, in order)
ZOO2 = [c[0] for c in CONFIGS[CONFIGS.index(("post_it", "post_it", {}, "none")) :]]


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def run(dataset: str, seeds: list[int], only: list[str] | None, skip: Sequence[str] = ()) -> list[dict]:
    from arena.match import prepare, run_match
    from arena.store import ArtifactStore

    store = ArtifactStore()
    out_path = RESULTS / f"attacks-{dataset}.jsonl"
    RESULTS.mkdir(exist_ok=True)
    rows = []
    # seed-major: an interrupted run still has every configuration's first seed
    for seed in seeds:
        for label, attacker, params, defender in CONFIGS:
            if label in skip or only and label not in only and not ("zoo2" in only and label in ZOO2):
                continue
            r = run_match(prepare(attacker, defender, attacker_params=params, dataset=dataset, seed=seed), store).to_json()
            r["label"] = label
            rows.append(r)
            with out_path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                f"{label:<28} seed {seed} honest {r['honest']['ca']:.4f} CA {r['attacked']['ca']:.4f} ASR {r['attacked']['asr']:.4f} "
                f"per {json.dumps({k: round(v, 4) for k, v in r['attacked']['asr_per_trigger'].items()})} "
                f"defended {r['defended']['ca']:.4f}/{r['defended']['asr']:.4f} stealthy {r['stealthy']} train {r['seconds']['attack']:.0f}s "
                f"defense {r['seconds']['defense']:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    return rows


def table(rows: list[dict]) -> None:
    print("| attack | defender | seeds | honest CA | CA | ASR (headline) | ASR per trigger | stealthy | defended CA | defended ASR | FRR / FAR | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = [c[0] for c in CONFIGS]
    for label in sorted(dict.fromkeys(r["label"] for r in rows), key=lambda x: order.index(x) if x in order else len(order)):
        sel = [r for r in rows if r["label"] == label]
        col = lambda f: _mean_sd([f(r) for r in sel])  # noqa: E731
        names = list(sel[0]["attacked"]["asr_per_trigger"])
        per = ", ".join(f"{n} {_mean_sd([r['attacked']['asr_per_trigger'][n] for r in sel])}" for n in names) if len(names) > 1 else ""
        filt = ""
        if "frr" in sel[0]["defended"]:
            filt = f"{col(lambda r: r['defended']['frr'])} / " + ", ".join(_mean_sd([r["defended"]["far_per_trigger"][n] for r in sel]) for n in names)
        print(
            f"| {label} | {sel[0]['defender']['name']} | {len(sel)} | {col(lambda r: r['honest']['ca'])} | {col(lambda r: r['attacked']['ca'])} | "
            f"{col(lambda r: r['attacked']['asr'])} | {per} | {sum(r['stealthy'] for r in sel)}/{len(sel)} | {col(lambda r: r['defended']['ca'])} | "
            f"{col(lambda r: r['defended']['asr'])} | {filt} | {col(lambda r: r['seconds']['attack'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--home", help="ARENA_HOME to use (reuses its attacked models)")
    parser.add_argument("--only", nargs="+", help="configuration labels to run (see CONFIGS); zoo2: every zoo-2 one")
    parser.add_argument("--skip", nargs="+", default=[], help="configuration labels not to run")
    parser.add_argument("--table", action="store_true", help="only print the table of the stored rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to whatever else runs)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.table:
        rows = [json.loads(line) for line in (RESULTS / f"attacks-{args.dataset}.jsonl").read_text().splitlines()]
        latest = {(r["label"], r["seed"]): r for r in rows}  # a rerun's row replaces the earlier one
        wanted = [r for r in latest.values() if not args.only or r["label"] in args.only or ("zoo2" in args.only and r["label"] in ZOO2)]
        table(wanted)
        return
    os.environ["ARENA_HOME"] = args.home or tempfile.mkdtemp(prefix="arena-bench-")
    table(run(args.dataset, args.seeds, args.only, args.skip))


if __name__ == "__main__":
    main()
