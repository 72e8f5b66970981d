"""Leaderboards: the utility matrix, the equilibrium and the rankings of a suite, and the
published files under leaderboards/<suite>/. Everything here is a pure function of the results
rows, except `publish`, which writes the files."""

from __future__ import annotations

import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import arena
from arena import game, metrics, site
from arena.provenance import git_commit, numerics_label
from arena.results import mark_stale

METRICS = ("utility", "defended_ca", "defended_asr")


def strategy_label(name: str, params_json: str, defaults: dict[str, Any]) -> str:
    """A strategy as the game names it: its name plus the parameters that differ from the defaults."""
    params = json.loads(params_json)
    changed = {k: v for k, v in sorted(params.items()) if defaults.get(k) != v}
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")


def _defaults(kind: str, name: str) -> dict[str, Any]:
    from arena.errors import ArenaError
    from arena.registry import ATTACKERS, DEFENDERS

    try:
        return dict((ATTACKERS if kind == "attacker" else DEFENDERS).get(name).space.defaults())
    except ArenaError:
        return {}


def label_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["attacker_label"] = [strategy_label(n, p, _defaults("attacker", n)) for n, p in zip(out.attacker, out.attacker_params)]
    out["defender_label"] = [strategy_label(n, p, _defaults("defender", n)) for n, p in zip(out.defender, out.defender_params)]
    return out


def unplayed(suite: Any, frame: pd.DataFrame) -> dict[str, list[str]]:
    """The suite's strategies (as the game labels them) that have no row in `frame` at all."""
    f = label_frame(frame) if not frame.empty else frame
    out = {}
    for kind, specs in (("attacker", suite.attackers), ("defender", suite.defenders)):
        present = set(f[f"{kind}_label"]) if not f.empty else set()
        labels = [strategy_label(s.name, json.dumps(s.param_dict, sort_keys=True), _defaults(kind, s.name)) for s in specs]
        out[f"{kind}s"] = sorted(label for label in dict.fromkeys(labels) if label not in present)
    return out


@dataclass
class Board:
    """A suite's game: the matrix that was solved and everything left out of it, with reasons."""

    suite: str
    defenders: list[str]
    attackers: list[str]
    seeds: list[int]
    cells: dict[str, np.ndarray]  # metric -> (defenders, attackers, seeds), NaN where missing
    excluded: dict[str, str] = field(default_factory=dict)  # label -> why it is not in the game
    solution: game.ZeroSumSolution | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    detection: dict[str, dict[str, float]] = field(default_factory=dict)  # defender label -> rates
    numerics: dict[str, int] = field(default_factory=dict)  # numerics label -> rows computed under it
    stale: dict[str, str] = field(default_factory=dict)  # "attacker vs defender, seed s" -> why
    not_applicable: dict[tuple[str, str], str] = field(default_factory=dict)  # (defender, attacker), as the matrix is indexed -> why the defense cannot act there

    @property
    def matrix(self) -> np.ndarray:
        return np.nanmean(self.cells["utility"], axis=2)

    def mean(self, metric: str) -> np.ndarray:
        return np.nanmean(self.cells[metric], axis=2)

    def spread(self, metric: str) -> np.ndarray:
        c = self.cells[metric]
        return np.nanstd(c, axis=2, ddof=1) if c.shape[2] > 1 else np.zeros(c.shape[:2])


def build_board(frame: pd.DataFrame, suite: str, include_nonstealthy: bool = False, replicates: int = 200) -> Board:
    """The game of a suite's results: drop failed cells' strategies and (by default) non-stealthy
    attacks, say why, never fill a gap; solve; score with bootstrap intervals over seeds."""
    if frame.empty:
        raise ValueError(f"suite {suite!r} has no results")
    f = label_frame(frame)
    excluded: dict[str, str] = {}
    ok = f[f.status == "ok"]
    if not include_nonstealthy:
        for label, group in ok.groupby("attacker_label"):
            if not group.stealthy.all():
                excluded[label] = "not stealthy: its undefended clean accuracy fell more than the tolerance below honest on " + f"{int((~group.stealthy.astype(bool)).sum())} of {len(group)} matches"
    failed = f[f.status != "ok"]
    for label, group in failed.groupby("defender_label"):
        excluded.setdefault(label, f"{len(group)} failed matches ({', '.join(sorted(set(group.status)))}): e.g. {str(group.error.iloc[0])[:120]}")
    keep = f[~f.defender_label.isin(excluded) & ~f.attacker_label.isin(excluded)]
    defenders = sorted(set(keep.defender_label))
    attackers = sorted(set(keep.attacker_label))
    seeds = sorted(set(int(s) for s in keep.seed))
    cells = {m: np.full((len(defenders), len(attackers), len(seeds)), np.nan) for m in METRICS}
    di, ai, si = ({v: i for i, v in enumerate(xs)} for xs in (defenders, attackers, seeds))
    for row in keep.itertuples():
        for m in METRICS:
            cells[m][di[row.defender_label], ai[row.attacker_label], si[int(row.seed)]] = getattr(row, m)
    # a cell with no seed at all (never run, or all failed) is never filled: its attacker goes
    missing = np.isnan(cells["utility"]).all(axis=2)
    for j, label in enumerate(attackers):
        if missing[:, j].any():
            excluded[label] = "incomplete: no result against " + ", ".join(d for d, miss in zip(defenders, missing[:, j]) if miss)
    keep_cols = [j for j, label in enumerate(attackers) if label not in excluded]
    attackers = [attackers[j] for j in keep_cols]
    cells = {m: c[:, keep_cols, :] for m, c in cells.items()}
    board = Board(suite, defenders, attackers, seeds, cells, excluded, detection=detection_table(f), numerics=numerics_counts(f))
    if "not_applicable" in keep:  # a cell is n/a when the defense could act on none of its seeds' models
        cells_in = keep[keep.defender_label.isin(defenders) & keep.attacker_label.isin(attackers)]
        for (d, a), group in cells_in.groupby(["defender_label", "attacker_label"]):
            if group.not_applicable.notna().all():
                board.not_applicable[(str(d), str(a))] = str(group.not_applicable.iloc[0])
    marked = mark_stale(f)
    board.stale = {f"{r.attacker_label} vs {r.defender_label}, seed {r.seed}": str(r.stale_reason) for r in marked[marked.stale].itertuples()}
    if defenders and attackers:
        board.solution = game.solve_zero_sum(board.matrix)
        dn, an = game.nash_averaged(board.matrix, board.solution)
        dw, aw = game.worst_case(board.matrix)
        board.scores = {"defender_nash": dn, "attacker_nash": an, "defender_worst": dw, "attacker_worst": aw}
        board.scores.update(game.bootstrap_scores(cells["utility"], replicates=replicates))
        for side in ("defender", "attacker"):
            for kind in ("nash", "worst"):
                board.scores[f"{side}_{kind}_rank"] = game.interval_ranks(board.scores[f"{side}_{kind}_lo"], board.scores[f"{side}_{kind}_hi"])
    return board


def _json_list(text: Any) -> list[int]:
    return [] if not isinstance(text, str) or not text else list(json.loads(text) or [])


def detection_table(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Model-level detection per verdict-giving defender, over its `ok` rows: a model is
    backdoored when its attacker is not `none` (honest models count for the false positives)."""
    f = frame if "defender_label" in frame else label_frame(frame)
    if "verdict_flagged" not in f:
        return {}
    out: dict[str, dict[str, float]] = {}
    ok = f[(f.status == "ok") & f.verdict_flagged.notna()]
    for label, group in ok.groupby("defender_label"):
        out[str(label)] = metrics.detection_summary(
            [bool(v) for v in group.verdict_flagged],
            [math.nan if v is None else float(v) for v in group.verdict_score],
            [a != "none" for a in group.attacker],
            [_json_list(v) for v in group.verdict_labels],
            [_json_list(v) for v in group.targets],
        )
    return out


def numerics_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many `ok` rows were computed under each numerics: more than one key means the table
    mixes numerics, which every view of the board says aloud."""
    if "numerics" not in frame:
        return {}
    ok = frame[frame.status == "ok"]
    labels = [numerics_label(json.loads(n) if isinstance(n, str) else None) for n in ok.numerics]
    return dict(sorted(pd.Series(labels, dtype=object).value_counts().items())) if labels else {}


def _paper(kind: str, name: str) -> str | None:
    from arena.errors import ArenaError
    from arena.registry import ATTACKERS, DEFENDERS

    try:
        return str(getattr((ATTACKERS if kind == "attacker" else DEFENDERS).get(name), "paper", "") or "") or None
    except ArenaError:  # a strategy published here and not installed now
        return None


def strategy_table(f: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Each strategy of the board (by label): its registry name, version, full parameters and the
    paper it follows (from the installed code; None for a strategy not installed here)."""
    out: dict[str, dict[str, dict[str, Any]]] = {"defenders": {}, "attackers": {}}
    for kind in ("defender", "attacker"):
        for label, group in f.groupby(f"{kind}_label"):
            first = group.iloc[0]
            out[f"{kind}s"][str(label)] = {"name": str(first[kind]), "version": str(first[f"{kind}_version"]), "params": json.loads(first[f"{kind}_params"]), "paper": _paper(kind, str(first[kind]))}
    return out


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return None if values.empty else round(float(values.mean()), 3)


def cost_table(f: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """What each strategy cost on the rows it played: seconds per match (its own stage: training
    the attacked model, or the defense; n/a cells left out), and the clean samples a defender was
    given (its budget: what it used of them is its own business)."""
    ok = f[f.status == "ok"]
    attackers = {str(a): {"seconds": _mean(g.drop_duplicates("artifact_sha256").seconds_attack), "models": int(g.artifact_sha256.nunique())} for a, g in ok.groupby("attacker_label")}
    played = ok[ok.not_applicable.isna()] if "not_applicable" in ok else ok  # an n/a cell ran no defense: it is no cost of one
    defenders = {str(d): {"seconds": _mean(g.seconds_defense), "clean_samples": _mean(g.clean_samples), "matches": len(g)} for d, g in played.groupby("defender_label")}
    return {"attackers": attackers, "defenders": defenders}


def _mixture(weights: dict[str, float]) -> str:
    """`strip` (100%), or `a` (60%) and `b` (40%): the support of a mixed strategy in words."""
    parts = [f"`{k}` ({v:.0%})" for k, v in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])) if v > 5e-3]
    if not parts:  # no weight above the naming threshold (hundreds of strategies, evenly mixed)
        return "a mixture of " + str(len(weights)) + " strategies, none above 0.5%"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# the reasons build_board gives for leaving a strategy out, by how each begins
EXCLUSIONS = ((re.compile(r"^not stealthy"), "left out as not stealthy"), (re.compile(r"^\d+ failed matches"), "left out for failed matches"), (re.compile(r"^incomplete"), "left out as incomplete"))


def answer(eq: dict[str, Any], previous: dict[str, Any] | None, same_since: str | None = None) -> list[str]:
    """The page's opening: the answer in words (which defenses hold up, at what value, against
    which attack mixture; what is not in the game and why; what changed since `previous`, the
    last refresh on record, see arena.site.history_entry). Markdown; `code` marks names."""
    out = []
    ranking = eq.get("defender_ranking") or []
    if eq.get("value") is None or not ranking:
        out.append("No complete game could be formed from these results: every defender or every attacker was left out (see below).")
    else:
        worst = sorted(ranking, key=lambda r: (-r["worst_case"], r["strategy"]))
        best = worst[0]
        attackers = len(eq.get("attacker") or {})
        out.append(
            f"**Which defense holds up.** Against the {attackers} attackers in this game, the defender's best play is {_mixture(eq.get('defender') or {})}: it keeps "
            f"the defender's utility (clean accuracy minus attack success rate) at {eq['value']:.3f} or more, whichever of them the attacker plays. "
            f"Against it, the attacker's best play is {_mixture(eq.get('attacker') or {})}."
        )
        holding = [r for r in worst if r["worst_case"] >= eq["value"] - 0.05]
        ranked = ", ".join(f"`{r['strategy']}` {r['worst_case']:.3f}" for r in worst[:4])
        line = f"By its worst case over those attackers, the best single defense is `{best['strategy']}` ({best['worst_case']:.3f}); the first {min(4, len(worst))}: {ranked}."
        if len(holding) > 1:
            line += f" {len(holding)} defenses stay within 0.05 of the game value."
        none = next((r for r in ranking if r["strategy"] == "none"), None)
        if none is not None:
            line += f" With no defense (`none`) the worst attack brings utility to {none['worst_case']:.3f}."
        out.append(line)
        g = eq.get("adapted") or {}
        if isinstance(g.get("attacker_adapted_value"), (int, float)) and isinstance(g.get("value"), (int, float)):
            out.append(_adapted_answer(g))
    left = []
    na = eq.get("not_applicable") or {}
    if na:
        by_defender: dict[str, int] = {}
        for defender, against_whom, _ in na_groups(eq):
            by_defender[defender] = by_defender.get(defender, 0) + len(against_whom)
        every = len(eq["matrix"]["columns"])
        against: dict[str, list[str]] = {}  # defenders n/a against the same number of attackers said together
        for d, n in by_defender.items():
            against.setdefault("every attacker" if n == every else f"{n} of {every} attackers", []).append(f"`{d}`")
        whom = "; ".join(f"{' and '.join(ds) if len(ds) < 3 else ', '.join(ds)} against {what}" for what, ds in against.items())
        left.append(f"{len(na)} n/a cells ({whom}: the defense cannot act on that model, so the cell scores the model deployed as it is)")
    excluded = eq.get("excluded") or {}
    for pattern, word in EXCLUSIONS:
        names = sorted(k for k, v in excluded.items() if pattern.match(str(v)))
        if names:
            left.append(f"{', '.join(f'`{n}`' for n in names)} {word}")
    if eq.get("failed_cells"):
        left.append(f"{eq['failed_cells']} failed matches in all")
    unplayed_strategies = eq.get("unplayed") or {}
    for side in ("attackers", "defenders"):
        names = unplayed_strategies.get(side) or []
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            left.append(f"{len(names)} {side} of the suite have no results yet ({shown}): a refresh plays them")
    out.append("**Not in the game.** " + ("; ".join(left) + ". Each is listed below." if left else "Nothing: every strategy of the suite played every cell."))
    if same_since is not None:
        before = _changes(eq, previous)
        out.append(f"**Since the last refresh.** Nothing changed: this answer has stood since {same_since}." + (f" Before that: {before[0].lower()}{before[1:]}" if previous else ""))
    else:
        out.append("**Since the last refresh.** " + _changes(eq, previous))
    if eq.get("stale"):
        out.append(f"**Caveat.** {len(eq['stale'])} of these rows were computed by strategy code that has changed since (listed below); `arena leaderboard refresh {eq['suite']}` plays them again.")
    return out


def _changes(eq: dict[str, Any], previous: dict[str, Any] | None) -> str:
    if previous is None:
        return "This is the first refresh on record."
    words = []
    if previous.get("value") is not None and eq.get("value") is not None:
        words.append(f"the game value went from {previous['value']:.3f} to {eq['value']:.3f}" if abs(previous["value"] - eq["value"]) >= 5e-4 else f"the game value stayed at {eq['value']:.3f}")
    for side in ("defender", "attacker"):
        now, then = set(eq.get(side) or {}), set(previous.get(side) or {})
        if now - then:
            words.append(f"{side}s added: " + ", ".join(f"`{n}`" for n in sorted(now - then)))
        if then - now:
            words.append(f"{side}s gone: " + ", ".join(f"`{n}`" for n in sorted(then - now)))
        support = {k for k, v in (eq.get(side) or {}).items() if v > 5e-3}
        if support != set(previous.get(f"{side}_support") or []):
            words.append(f"the {side}'s equilibrium is now {_mixture(eq[side])}" if eq.get(side) else f"the {side} has no equilibrium")
    adapted, before = (eq.get("adapted") or {}).get("value"), previous.get("adapted_value")
    if isinstance(adapted, (int, float)) and not isinstance(before, (int, float)):
        words.append(f"the adapted game (`arena oracle`) is published, value {adapted:.3f}")
    elif isinstance(adapted, (int, float)) and isinstance(before, (int, float)) and abs(adapted - before) >= 5e-4:
        words.append(f"the adapted game's value went from {before:.3f} to {adapted:.3f}")
    return f"Compared with {previous.get('date', 'the last one')}: " + ("; ".join(words) if words else "nothing changed") + "."


def equilibrium_json(board: Board, frame: pd.DataFrame) -> dict[str, Any]:
    """The published equilibrium: value, mixtures, exploitability, rankings, provenance."""
    f = label_frame(frame)
    versions = {f"attacker/{n}": v for n, v in zip(f.attacker, f.attacker_version)} | {f"defender/{n}": v for n, v in zip(f.defender, f.defender_version)}
    out: dict[str, Any] = {
        "suite": board.suite,
        "game": "zero-sum, defender utility u_D = CA - ASR, attacker utility -u_D; maximum-entropy equilibrium",
        "seeds": board.seeds,
        "excluded": board.excluded,
        "detection": {d: {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for d, r in board.detection.items()},
        "numerics": board.numerics,
        "stale": board.stale,
        "provenance": {
            "arena_version": arena.__version__,
            "git_commit": git_commit(),
            "strategy_versions": dict(sorted(versions.items())),
            "date": time.strftime("%Y-%m-%d"),
            "results_git_commits": sorted(set(str(c) for c in f.git_commit.dropna())),
        },
    }
    out["strategies"] = strategy_table(f)
    out["costs"] = cost_table(f)
    out["failed_cells"] = int((f.status != "ok").sum())
    if board.solution is None:
        out["value"] = None
        return out
    out.update(board.solution.to_dict(board.defenders, board.attackers))
    s = board.scores
    for side, labels in (("defender", board.defenders), ("attacker", board.attackers)):
        out[f"{side}_ranking"] = sorted(
            (
                {
                    "strategy": label,
                    "nash_averaged": float(s[f"{side}_nash"][i]),
                    "nash_averaged_interval": [float(s[f"{side}_nash_lo"][i]), float(s[f"{side}_nash_hi"][i])],
                    "nash_rank": int(s[f"{side}_nash_rank"][i]),
                    "worst_case": float(s[f"{side}_worst"][i]),
                    "worst_case_interval": [float(s[f"{side}_worst_lo"][i]), float(s[f"{side}_worst_hi"][i])],
                    "worst_case_rank": int(s[f"{side}_worst_rank"][i]),
                    "equilibrium_probability": float((board.solution.defender if side == "defender" else board.solution.attacker)[i]),
                }
                for i, label in enumerate(labels)
            ),
            key=lambda r: (-r["nash_averaged"], r["strategy"]),
        )
    out["matrix"] = {
        "rows": board.defenders,
        "columns": board.attackers,
        **{m: board.mean(m).round(6).tolist() for m in METRICS},
        **{f"{m}_sd": board.spread(m).round(6).tolist() for m in METRICS},
    }
    if board.not_applicable:  # n/a cells (docs/design.md §10): scored as the published model deployed as it is
        out["matrix"]["not_applicable"] = [[(d, a) in board.not_applicable for a in board.attackers] for d in board.defenders]
        out["not_applicable"] = {f"{a} vs {d}": why for (d, a), why in sorted(board.not_applicable.items())}
    return out


# ---------------------------------------------------------------------------------------------
# Published files


def _heatmap(path: Path, values: np.ndarray, rows: list[str], cols: list[str], title: str, cmap: str, vmin: float, vmax: float, na: Any = frozenset()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.2 + 0.55 * len(rows)))
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, ("n/a " if (rows[i], cols[j]) in na else "") + f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8, color="black")
    ax.set_xlabel("attacker")
    ax.set_ylabel("defender")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no timestamps: reruns give the same bytes
    plt.close(fig)


def _rate(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _numerics_lines(eq: dict[str, Any]) -> list[str]:
    lines = []
    numerics = eq.get("numerics") or {}
    if numerics:
        head = "**Mixed numerics**: these rows were computed under different numerics and may differ in their last bits." if len(numerics) > 1 else "All rows were computed under one numerics."
        lines += ["## Numerics", "", head, ""] + [f"- {k}: {v} rows" for k, v in numerics.items()] + [""]
    if eq.get("stale"):
        lines += ["## Stale rows", "", f"{len(eq['stale'])} rows were produced by code that has changed since; `arena leaderboard refresh` re-runs them.", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(eq["stale"].items())] + [""]
    return lines


def na_groups(eq: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    """The n/a cells said once per defender and reason: (defender, the attackers, why), in the
    matrix's order. A board of 22 attackers where a defense needs batch normalisation has 22 n/a
    cells with one reason; a reader needs it once."""
    mat = eq["matrix"]
    marks = mat.get("not_applicable") or []
    groups: dict[tuple[str, str], list[str]] = {}
    for i, defender in enumerate(mat["rows"]):
        for j, attacker in enumerate(mat["columns"]):
            if marks and marks[i][j]:
                groups.setdefault((defender, eq["not_applicable"][f"{attacker} vs {defender}"]), []).append(attacker)
    return [(defender, attackers, why) for (defender, why), attackers in groups.items()]


def _na_whom(attackers: list[str], every: int) -> str:
    return f"every attacker in the game ({every})" if len(attackers) == every else ", ".join(attackers)


def _na(matrix: dict[str, Any], i: int, j: int) -> str:
    """The mark of an n/a cell, before the value it is scored at."""
    marks = matrix.get("not_applicable")
    return "n/a, " if marks is not None and marks[i][j] else ""


def markdown_page(eq: dict[str, Any]) -> str:
    lines = [f"# Leaderboard: {eq['suite']}", ""]
    for paragraph in eq.get("answer", []):
        lines += [paragraph, ""]
    lines += ["## The evidence", "", f"{eq['game']}. Seeds: {', '.join(map(str, eq['seeds']))}. "
             f"arena {eq['provenance']['arena_version']}, commit {eq['provenance']['git_commit'] or 'unknown'}, {eq['provenance']['date']}.", ""]
    if eq.get("value") is None:
        lines += ["No complete game could be formed from the results.", ""]
    else:
        lines += [f"**Game value** (defender utility at equilibrium): {eq['value']:.3f}; exploitability of the reported pair: {eq['exploitability']:.2e}.", ""]
        for side in ("defender", "attacker"):
            lines += [f"## {side.capitalize()}s", "", "| rank (Nash) | strategy | Nash-averaged utility | 90% interval | worst case | 90% interval | rank (worst)"
                " | equilibrium weight |", "|---|---|---|---|---|---|---|---|"]
            for r in eq[f"{side}_ranking"]:
                lo, hi = r["nash_averaged_interval"]
                wlo, whi = r["worst_case_interval"]
                lines.append(f"| {r['nash_rank']} | `{r['strategy']}` | {r['nash_averaged']:.3f} | [{lo:.3f}, {hi:.3f}] | {r['worst_case']:.3f} | [{wlo:.3f}, {whi:.3f}]"
                    f" | {r['worst_case_rank']} | {r['equilibrium_probability']:.3f} |")
            lines.append("")
        mat = eq["matrix"]
        lines += ["## Defender utility (CA − ASR), mean ± sd over seeds", "", "| defender \\ attacker | " + " | ".join(f"`{c}`" for c in mat["columns"]) + " |", "|---|" + "---|" * len(mat["columns"])]
        for i, r in enumerate(mat["rows"]):
            lines.append(f"| `{r}` | " + " | ".join(_na(mat, i, j) + f"{mat['utility'][i][j]:.3f} ± {mat['utility_sd'][i][j]:.3f}" for j in range(len(mat["columns"]))) + " |")
        if eq.get("not_applicable"):
            lines += ["", "n/a: the defense cannot act on that attacker's model, so it was not run; the cell scores the published model deployed as it is (docs/design.md §10)."]
            lines += [f"- `{d}` against {_na_whom(a, len(mat['columns']))}: {why}" for d, a, why in na_groups(eq)]
        lines += ["", "![utility](utility.png) ![clean accuracy](ca.png) ![attack success](asr.png)", ""]
        lines += ["Ranks only separate strategies whose bootstrap intervals (over seeds) do not overlap; equal ranks are ties.", ""]
    if eq.get("detection"):
        lines += ["## Detection (model-level verdicts)", "", "A model is backdoored when its attacker is not `none`; honest models give the false positives. "
                  "A flagged model neither repaired nor filtered is replaced by the fallback (docs/design.md §3, the verdict rule).", "",
                  "| defender | backdoored models | honest models | TPR | FPR | AUROC | target hit |", "|---|---|---|---|---|---|---|"]
        for d, r in sorted(eq["detection"].items()):
            lines.append(f"| `{d}` | {r['backdoored']} | {r['honest']} | " + " | ".join(_rate(r[k]) for k in ("tpr", "fpr", "auroc", "target_hit")) + " |")
        lines.append("")
    lines += _numerics_lines(eq)
    if eq["excluded"]:
        lines += ["## Left out of the game", ""] + [f"- `{k}`: {v}" for k, v in sorted(eq["excluded"].items())] + [""]
    for side, names in (eq.get("unplayed") or {}).items():
        if names:
            lines += [f"## {side.capitalize()} of the suite not played yet", "", ", ".join(f"`{n}`" for n in names) + ": no row of theirs in these results; `arena leaderboard refresh "
                      + eq["suite"] + "` plays them against every opponent.", ""]
    if eq.get("adapted"):
        lines += _adapted_lines(eq["adapted"])
    lines += _strategy_lines(eq)
    lines += ["Files: `results.csv` (one row per match), `equilibrium.json`, `index.html`, heatmaps. Regenerate with `arena leaderboard refresh " + eq["suite"] + "`.", ""]
    return "\n".join(lines)


def paper_link(paper: str | None) -> str | None:
    """A search for the paper by its citation (the strategies name papers, not addresses)."""
    from urllib.parse import quote_plus

    return None if not paper else "https://scholar.google.com/scholar?q=" + quote_plus(paper)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "(none)"


def _cost_text(cost: dict[str, Any] | None, side: str) -> str:
    if not cost or cost.get("seconds") is None:
        return "—"
    text = f"{cost['seconds']:.1f} s"
    if side == "defenders" and cost.get("clean_samples") is not None:
        text += f", {cost['clean_samples']:.0f} clean samples given"
    return text


def _strategy_lines(eq: dict[str, Any]) -> list[str]:
    strategies, costs = eq.get("strategies") or {}, eq.get("costs") or {}
    if not strategies:
        return []
    lines = ["## The strategies: paper, parameters, cost", "", "Cost: seconds per match of the strategy's own stage (training the attacked model; the defense), "
             "and the clean samples a defense was given (n/a cells left out).", "", "| side | strategy | version | paper | parameters | cost |", "|---|---|---|---|---|---|"]
    for side in ("defenders", "attackers"):
        for label, info in sorted(strategies.get(side, {}).items()):
            link = paper_link(info.get("paper"))
            paper = f"[{info['paper']}]({link})" if link else "—"
            lines.append(f"| {side[:-1]} | `{label}` | {info['version']} | {paper} | {_params_text(info['params'])} | {_cost_text(costs.get(side, {}).get(label), side)} |")
    submitted = [(label, info["submission"]) for side in ("defenders", "attackers") for label, info in sorted(strategies.get(side, {}).items()) if info.get("submission")]
    if submitted:
        lines += ["", "Submitted strategies (played from a bundle of `arena submit` whose wheel matched the SHA-256 it records, checked again by the maintainer's refresh):", ""]
        lines += [f"- `{label}`: `{sub['wheel']}`, SHA-256 `{sub['sha256']}`, checked with arena {sub['checked_with'].get('arena_version')}" for label, sub in submitted]
    return lines + [""]


def _strategy_html(eq: dict[str, Any]) -> str:
    e = html.escape
    strategies, costs = eq.get("strategies") or {}, eq.get("costs") or {}
    if not strategies:
        return ""
    rows = []
    for side in ("defenders", "attackers"):
        for label, info in sorted(strategies.get(side, {}).items()):
            link = paper_link(info.get("paper"))
            paper = f"<a href='{e(link)}'>{e(info['paper'])}</a>" if link else "—"
            if info.get("submission"):
                paper += f"<br>submitted: <code>{e(info['submission']['wheel'])}</code>, SHA-256 <code class='sha'>{e(info['submission']['sha256'])}</code>"
            rows.append(f"<tr><td class='s'>{side[:-1]}</td><td class='s'>{e(label)}</td><td>{e(info['version'])}</td><td class='t'>{paper}</td>"
                        f"<td class='s'>{e(_params_text(info['params']))}</td><td>{e(_cost_text(costs.get(side, {}).get(label), side))}</td></tr>")
    return ("<h2>The strategies: paper, parameters, cost</h2><p>Cost: seconds per match of the strategy's own stage, and the clean samples a defense was given (n/a cells left out).</p>"
            "<table id='strategies'><tr><th>side</th><th>strategy</th><th>version</th><th>paper</th><th>parameters</th><th>cost</th></tr>" + "".join(rows) + "</table>")


def inline_html(text: str) -> str:
    """The answer's markdown (**bold**, `code`) as HTML, everything else escaped."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _searched(game: dict[str, Any], side: str) -> list[str] | None:
    """The families `arena oracle` searched on one side (None: a game recorded without the list)."""
    names = (game.get("searched") or {}).get(side)
    return [str(n) for n in names] if isinstance(names, list) else None


def _final_game_label(game: dict[str, Any]) -> str:
    return "the final game (the defenders as written: none searched)" if _searched(game, "defenders") == [] else "both adapt (the final game)"


def _stopped(game: dict[str, Any]) -> str:
    if game.get("converged"):
        return "converged"
    return f"not converged: the {'time' if game.get('stopped_by') == 'time' else 'iteration'} budget ran out"


def _adapted_answer(game: dict[str, Any]) -> str:
    """The answer's sentence on the adapted game: what was searched, the value once the attacker
    adapts, the best single defense by worst case then, and whether the search converged."""
    attackers = _searched(game, "attackers")
    what = f"{', '.join(f'`{n}`' for n in attackers)} searched" if attackers else "hyperparameters searched"
    line = f"**When the attacker adapts** ({what} by `arena oracle`), the value is {game['attacker_adapted_value']:.3f}"
    defenders = _searched(game, "defenders")
    if defenders == []:
        line += "; the defenders were not searched."
    else:
        which = f" ({', '.join(f'`{n}`' for n in defenders)} searched)" if defenders else ""
        line += f"; when both sides adapt{which}, {game['value']:.3f}."
    worst = [w for w in game.get("worst_case") or [] if isinstance(w.get("worst_adapted"), (int, float))]
    if worst:
        best = max(worst, key=lambda w: w["worst_adapted"])
        line += f" The best single defense by worst case is then `{best['defender']}` ({best['worst_adapted']:.3f})"
        line += "." if best["worst_adapted"] > 0 else ": none stays above zero."
    if not game.get("converged"):
        line += f" The search is {_stopped(game)}, so the attacker may gain more."
    return line


def _adapted_lines(game: dict[str, Any]) -> list[str]:
    """The adapted game's section of README.md (`arena oracle`, published by refresh)."""
    cost = game["cost"]
    lines = ["## The adapted game (searched, `arena oracle`)", "",
             "The game above holds the suite's strategies as written. `arena oracle` grew it by best responses searched with Ray Tune over the strategies' "
             "hyperparameter spaces (docs/design.md §6); strategies it added are marked *adapted*. Its cells follow the stealth rule: a non-stealthy attack "
             "scores as a failed one.", "",
             "| game | value |", "|---|---|",
             f"| the suite as written | {game['static_value']:.3f} |",
             f"| the attacker adapts (against the suite's defenders) | {game['attacker_adapted_value']:.3f} |",
             f"| {_final_game_label(game)} | {game['value']:.3f} |", "",
             f"In the last round (reported, not added) the defender's best response would gain {game['iterations'][-1]['defender_gain']:.3f} and the attacker's "
             f"{game['iterations'][-1]['attacker_gain']:.3f}"
             + (f"; searches the time budget skipped or cut short before any trial finished: {game['iterations'][-1]['skipped_searches']}"
                " (a side whose search did not run shows no gain)." if game["iterations"][-1].get("skipped_searches") else "."),
             "",
             f"Exploitability bound {game['exploitability']:.3f} ({_stopped(game)}): {game['exploitability_note']}. "
             f"{len(game['iterations'])} iterations, {cost['trials']} trials ({cost['failed_trials']} failed, {cost['stopped_trials']} stopped early), "
             f"{cost['trial_seconds'] / 3600:.2f} CPU-hours of trials (a resumed run counts the trials it read back).", "",
             "### How far each defender's worst case falls when the attacker adapts", "",
             "| defender | worst case, suite's attackers | worst case, with adapted attackers | fall | its worst attacker |", "|---|---|---|---|---|"]
    for w in game["worst_case"]:
        before = "—" if w["worst_static"] is None else f"{w['worst_static']:.3f}"
        fall = "—" if w["fall"] is None else f"{w['fall']:.3f}"
        lines.append(f"| `{w['defender']}`{' (adapted)' if w['adapted'] else ''} | {before} | {w['worst_adapted']:.3f} | {fall} | `{w['worst_attacker']}` |")
    lines += ["", "### Equilibrium of the adapted game, and what search added", "", "| side | strategy | adapted | parameters | equilibrium weight |", "|---|---|---|---|---|"]
    for side in ("defenders", "attackers"):
        for e in game[side]:
            if e["adapted"] or e["probability"] > 1e-6:
                params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(e["params"].items()))
                lines.append(f"| {side[:-1]} | `{e['label']}` | {'yes' if e['adapted'] else 'no'} | {params} | {e['probability']:.3f} |")
    lines += ["", f"Cells: {game['cells']}; the whole game in `adapted.json`.", ""]
    return lines


def _adapted_html(game: dict[str, Any]) -> str:
    e = html.escape
    def num(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    rows = "".join(
        f"<tr><td class='s'>{e(w['defender'])}{' (adapted)' if w['adapted'] else ''}</td><td>{num(w['worst_static'])}</td>"
        f"<td>{w['worst_adapted']:.3f}</td><td>{num(w['fall'])}</td><td class='s'>{e(w['worst_attacker'])}</td></tr>"
        for w in game["worst_case"]
    )
    added = "".join(
        f"<tr><td>{side[:-1]}</td><td class='s'>{e(x['label'])}</td><td>{'yes' if x['adapted'] else 'no'}</td><td>{x['probability']:.3f}</td></tr>"
        for side in ("defenders", "attackers") for x in game[side] if x["adapted"] or x["probability"] > 1e-6
    )
    return (
        "<h2>The adapted game (searched, <code>arena oracle</code>)</h2>"
        f"<table id='adapted-values'><tr><th>game</th><th>value</th></tr><tr><td class='s'>the suite as written</td><td>{game['static_value']:.3f}</td></tr>"
        f"<tr><td class='s'>the attacker adapts</td><td>{game['attacker_adapted_value']:.3f}</td></tr>"
        f"<tr><td class='s'>{e(_final_game_label(game))}</td><td id='adapted-value'>{game['value']:.3f}</td></tr></table>"
        f"<p>Exploitability bound {game['exploitability']:.3f} ({e(_stopped(game))}): {e(game['exploitability_note'])}.</p>"
        "<h3>Each defender's worst case, before and after the attacker adapts</h3><table id='adapted-worst-case'><tr><th>defender</th><th>suite's attackers</th>"
        f"<th>with adapted attackers</th><th>fall</th><th>worst attacker</th></tr>{rows}</table>"
        f"<h3>Equilibrium and added strategies</h3><table id='adapted-strategies'><tr><th>side</th><th>strategy</th><th>adapted</th><th>weight</th></tr>{added}</table>"
    )


def html_page(eq: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>arena leaderboard: {e(eq['suite'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}td.s{text-align:left;font-family:monospace}td.t{text-align:left}"
        "#answer{font-size:1.1em;max-width:60em}</style>",
        "</head><body>",
        f"<h1>Leaderboard: {e(eq['suite'])}</h1>",
        "<div id='answer'>" + "".join(f"<p>{inline_html(p)}</p>" for p in eq.get("answer", [])) + "</div>",
        "<h2>The evidence</h2>",
        f"<p>{e(eq['game'])}. arena {e(eq['provenance']['arena_version'])}, commit {e(str(eq['provenance']['git_commit']))}, {e(eq['provenance']['date'])}.</p>",
    ]
    if eq.get("value") is not None:
        parts.append(f"<p>Game value: <span id='value'>{eq['value']:.4f}</span>; exploitability <span id='exploitability'>{eq['exploitability']:.2e}</span>.</p>")
        for side in ("defender", "attacker"):
            parts.append(f"<h2>{side.capitalize()}s</h2><table id='{side}-ranking'><tr><th>rank</th><th>strategy</th><th>Nash-averaged</th><th>interval</th><th>worst case</th>"
                f"<th>equilibrium weight</th></tr>")
            for r in eq[f"{side}_ranking"]:
                lo, hi = r["nash_averaged_interval"]
                parts.append(
                    f"<tr><td>{r['nash_rank']}</td><td class='s'>{e(r['strategy'])}</td><td>{r['nash_averaged']:.4f}</td><td>[{lo:.3f}, {hi:.3f}]</td>"
                    f"<td>{r['worst_case']:.4f}</td><td>{r['equilibrium_probability']:.4f}</td></tr>"
                )
            parts.append("</table>")
        mat = eq["matrix"]
        parts.append("<h2>Defender utility</h2><table id='utility-matrix'><tr><th>defender \\ attacker</th>" + "".join(f"<th>{e(c)}</th>" for c in mat["columns"]) + "</tr>")
        for i, r in enumerate(mat["rows"]):
            parts.append(f"<tr><td class='s'>{e(r)}</td>" + "".join(f"<td>{_na(mat, i, j)}{mat['utility'][i][j]:.4f}</td>" for j in range(len(mat["columns"]))) + "</tr>")
        parts.append("</table>")
        if eq.get("not_applicable"):
            parts.append("<p>n/a: the defense cannot act on that attacker's model, so it was not run; the cell scores the published model deployed as it is.</p><ul>"
                + "".join(f"<li>{e(d)} against {e(_na_whom(a, len(mat['columns'])))}: {e(why)}</li>" for d, a, why in na_groups(eq)) + "</ul>")
        parts.append("<p><img src='utility.png' alt='utility heatmap'> <img src='ca.png' alt='clean accuracy heatmap'> <img src='asr.png' alt='attack success heatmap'></p>")
    if eq.get("detection"):
        parts.append("<h2>Detection (model-level verdicts)</h2><table id='detection'><tr><th>defender</th><th>backdoored models</th><th>honest models</th><th>TPR</th><th>FPR</th>"
            "<th>AUROC</th><th>target hit</th></tr>")
        for d, r in sorted(eq["detection"].items()):
            parts.append(f"<tr><td class='s'>{e(d)}</td><td>{r['backdoored']}</td><td>{r['honest']}</td>" + "".join(f"<td>{_rate(r[k])}</td>" for k in ("tpr", "fpr", "auroc", "target_hit")) + "</tr>")
        parts.append("</table>")
    numerics = eq.get("numerics") or {}
    if numerics:
        parts.append(f"<h2>Numerics</h2><p id='numerics'>{'Mixed numerics: ' if len(numerics) > 1 else ''}" + "; ".join(f"{e(k)}: {v} rows" for k, v in numerics.items()) + "</p>")
    if eq.get("stale"):
        parts.append(f"<h2>Stale rows</h2><p>{len(eq['stale'])} rows were produced by code that has changed since; a refresh re-runs them."
            f"</p><ul>" + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in sorted(eq["stale"].items())) + "</ul>")
    if eq["excluded"]:
        parts.append("<h2>Left out of the game</h2><ul>" + "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in sorted(eq["excluded"].items())) + "</ul>")
    for side, names in (eq.get("unplayed") or {}).items():
        if names:
            parts.append(f"<h2>{e(side.capitalize())} of the suite not played yet</h2><p id='unplayed-{e(side)}'>" + ", ".join(f"<code>{e(n)}</code>" for n in names)
                         + f": no row of theirs in these results; <code>arena leaderboard refresh {e(eq['suite'])}</code> plays them against every opponent.</p>")
    if eq.get("adapted"):
        parts.append(_adapted_html(eq["adapted"]))
    parts.append(_strategy_html(eq))
    parts.append("<p><a href='../index.html'>All suites and their history</a></p></body></html>")
    return "\n".join(parts)


def published_date(folder: Path) -> str | None:
    """The date of the board published in `folder` (its equilibrium.json), or None."""
    try:
        return str(json.loads((folder / "equilibrium.json").read_text())["provenance"]["date"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _submissions(folder: Path) -> dict[str, Any]:
    """The suite folder's submissions.json (strategy name -> the bundle it was played from:
    wheel, sha256, bundle, checked_with, kind, played), each entry checked."""
    from arena.errors import StoreError

    path = folder / "submissions.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            raise ValueError("not a JSON object")
        for name, entry in known.items():
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("wheel", "sha256", "bundle")) or not isinstance(entry.get("checked_with"), dict):
                raise ValueError(f"the entry of {name!r} is not a bundle's wheel, sha256, bundle and checked_with")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreError(f"Cannot read {path} ({exc}); restore it from the repository. Nothing was published.") from None
    return known


def publish(
    board: Board,
    frame: pd.DataFrame,
    folder: Path,
    adapted: dict[str, Any] | None = None,
    missing: dict[str, list[str]] | None = None,
    date: str | None = None,
    submitted: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the leaderboard's files into `folder`; returns the equilibrium JSON. `adapted` (the
    game `arena oracle` grew from this suite, arena.adaptive.adapted_game) is published beside
    the static game: `adapted.json` and a section of each page. `missing`: the suite's
    strategies with no row yet (`unplayed`), said on the page. `date`: the board's date when it
    is not today's (pages rewritten from published rows keep theirs). `submitted`: the
    provenance of bundles played in this refresh (arena.submission.provenance_entries), added
    to submissions.json.

    Everything is read and checked before anything is written (the history, submissions.json),
    so a damaged file stops the publication with nothing changed."""
    eq = equilibrium_json(board, frame)
    if date is not None:
        eq["provenance"]["rendered"] = eq["provenance"]["date"]
        eq["provenance"]["date"] = date
    if missing and any(missing.values()):
        eq["unplayed"] = missing
    if adapted is not None:
        eq["adapted"] = adapted
    known = {**(_submissions(folder) if folder.exists() else {}), **(submitted or {})}
    for side in ("defenders", "attackers"):  # a submitted strategy's rows carry the bundle's hash as provenance
        for info in eq["strategies"][side].values():
            if info["name"] in known:
                info["submission"] = {k: known[info["name"]].get(k) for k in ("wheel", "sha256", "bundle", "checked_with")}
    past = site.read_history(folder) if folder.exists() else []
    previous, same_since = site.previous_answer(past, eq, rerender=date is not None)
    eq["answer"] = answer(eq, previous, same_since)
    pages = markdown_page(eq), html_page(eq)
    # all read and rendered; now written
    folder.mkdir(parents=True, exist_ok=True)
    tidy = label_frame(frame).drop(columns=["updated"]).sort_values(["attacker_label", "defender_label", "seed"])
    tidy.to_csv(folder / "results.csv", index=False)
    if adapted is not None:
        (folder / "adapted.json").write_text(json.dumps(adapted, indent=1) + "\n")
    elif (folder / "adapted.json").exists():
        (folder / "adapted.json").unlink()  # a game grown from other strategies is not this board's
    if submitted:
        from arena.store import atomic_write

        atomic_write(folder / "submissions.json", (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
    site.write_history(folder, past, eq)
    (folder / "equilibrium.json").write_text(json.dumps(eq, indent=1) + "\n")
    (folder / "README.md").write_text(pages[0])
    (folder / "index.html").write_text(pages[1])
    if board.solution is not None:
        _heatmap(folder / "utility.png", board.matrix, board.defenders, board.attackers, "defender utility CA − ASR", "RdYlGn", -1.0, 1.0, board.not_applicable)
        _heatmap(folder / "ca.png", board.mean("defended_ca"), board.defenders, board.attackers, "clean accuracy after defense", "Greens", 0.0, 1.0, board.not_applicable)
        _heatmap(folder / "asr.png", board.mean("defended_asr"), board.defenders, board.attackers, "attack success after defense", "Reds", 0.0, 1.0, board.not_applicable)
    if folder.parent.name == site.ROOT_NAME:  # the site index lives in the leaderboards folder only
        site.write_index(folder.parent)
    return eq
