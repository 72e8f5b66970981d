"""Neural Cleanse and STRIP on Fashion-MNIST (the defense-zoo issue).

    python benchmarks/defenses.py --seeds 0 1 2 [--home DIR]

Reuses the attacked models of `benchmarks/spine.py quality` when --home points at its store
(same specs, same keys), else trains them. Writes benchmarks/results/defenses-fashion_mnist.json,
PNGs of Neural Cleanse's reversed triggers next to the true trigger under
benchmarks/results/neural_cleanse/, and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save_triggers_png(path: Path, reversed_triggers, true_trigger, input_shape, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    n = len(reversed_triggers) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.4 * n, 1.9))
    blank = torch.zeros(1, *input_shape)
    axes[0].imshow(true_trigger.apply(blank)[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("true", fontsize=8)
    for ax, t in zip(axes[1:], reversed_triggers):
        ax.imshow((t.mask * t.pattern)[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{t.label}: L1 {t.l1:.0f}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--home", default=None)
    parser.add_argument("--defenders", nargs="+", default=["neural_cleanse", "strip"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    os.environ["ARENA_HOME"] = args.home or tempfile.mkdtemp(prefix="arena-def-")
    sys.path.insert(0, str(Path(__file__).parents[1]))
    import torch
    from arena.defenders.neural_cleanse import NeuralCleanse

    from arena import metrics
    from arena.data import load_dataset, player_splits
    from arena.match import attack_stage, prepare, run_match
    from arena.models import build_model
    from arena.specs import derive_seed
    from arena.store import ArtifactStore
    from arena.strategy import DefenseContext
    from arena.triggers import trigger_from_dict

    torch.set_num_threads(args.threads)
    store = ArtifactStore()
    defenders = args.defenders
    rows = []
    (RESULTS / "neural_cleanse").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for attacker in ("none", "badnets", "pruning_aware"):
            for defender in defenders:
                r = run_match(prepare(attacker, defender, dataset="fashion_mnist", seed=seed), store).to_json()
                rows.append(r)
                v = r["defended"]["verdict"]
                print(f"seed {seed} {attacker:>13} vs {defender:<14} verdict {v} attacked {r['attacked']['ca']:.3f}/{r['attacked']['asr']:.3f} "
                      f"defended {r['defended']['ca']:.3f}/{r['defended']['asr']:.3f} frr {r['defended'].get('frr')} defense {r['seconds']['defense']:.1f}s", file=sys.stderr, flush=True)
        if "neural_cleanse" not in defenders:
            continue
        # the reversed triggers of the badnets model of this seed, next to the true one
        p = prepare("badnets", "neural_cleanse", dataset="fashion_mnist", seed=seed)
        record = attack_stage(p.spec.attack, store)
        model, _ = store.load(p.spec.attack.key, lambda _: build_model(p.task))
        splits = player_splits(load_dataset("fashion_mnist"), 0.05)
        nc = NeuralCleanse()
        ctx = DefenseContext(p.task, splits.clean, torch.Generator().manual_seed(derive_seed(seed, "figure")))
        triggers = nc.reverse_all(model, ctx)
        save_triggers_png(RESULTS / "neural_cleanse" / f"badnets-seed{seed}.png", triggers, trigger_from_dict(record.triggers[0]), p.task.input_shape,
                          f"Neural Cleanse, badnets (target 0), Fashion-MNIST seed {seed}")
    suffix = "" if defenders == ["neural_cleanse", "strip"] else "-" + "-".join(defenders)
    (RESULTS / f"defenses-fashion_mnist{suffix}.json").write_text(json.dumps(rows, indent=1))

    def sel(a, d):
        return [r for r in rows if r["attacker"]["name"] == a and r["defender"]["name"] == d]

    print("| attacker | defense | flagged | right target | defended CA (honest CA) | ASR before → after | FRR / FAR | defense s |")
    print("|---|---|---|---|---|---|---|---|")
    for a in ("none", "badnets", "pruning_aware"):
        for d in defenders:
            s = sel(a, d)
            mean = lambda f: sum(f(r) for r in s) / len(s)  # noqa: E731
            judged = [r for r in s if r["defended"]["verdict"] is not None]
            flagged = f"{sum(r['defended']['verdict']['flagged'] for r in judged)}/{len(judged)}" if judged else "—"
            right = sum(0 in r["defended"]["verdict"]["labels"] for r in judged) if judged and a != "none" else "—"
            filtered = [r for r in s if r["defended"].get("frr") is not None]
            rates = f"{mean(lambda r: r['defended'].get('frr') or 0):.3f} / {mean(lambda r: max(r['defended']['far_per_trigger'].values(), default=0)):.3f}" if filtered else "—"
            print(f"| {a} | {d} | {flagged} | {right} | {mean(lambda r: r['defended']['ca']):.3f} ({mean(lambda r: r['honest']['ca']):.3f}) | "
                  f"{mean(lambda r: r['attacked']['asr']):.3f} → {mean(lambda r: r['defended']['asr']):.3f} | {rates} | {mean(lambda r: r['seconds']['defense']):.1f} |")
    for d in defenders:
        s = [r for r in rows if r["defender"]["name"] == d and r["defended"]["verdict"] is not None]
        if not s:
            continue
        tpr, fpr = metrics.detection_rates([r["defended"]["verdict"]["flagged"] for r in s], [r["attacker"]["name"] != "none" for r in s])
        auc = metrics.auroc([r["defended"]["verdict"]["score"] for r in s], [r["attacker"]["name"] != "none" for r in s])
        print(f"\n{d} detection over {len(s)} models: TPR {tpr:.2f}, FPR {fpr:.2f}, AUROC {auc:.2f}")


if __name__ == "__main__":
    main()
