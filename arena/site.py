"""The published site across suites: each suite folder's history of refreshes (history.json) and
the index page of the folder that holds the suites (leaderboards/index.html), so a reader sees
every suite's answer and how it changed when a strategy arrived. Pure HTML and inline SVG: no
script, nothing fetched."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from arena.errors import StoreError
from arena.store import atomic_write

SUPPORT = 5e-3  # an equilibrium weight below this is not named as part of the mixture
ROOT_NAME = "leaderboards"  # the folder of suites whose index a publication rewrites


def history_entry(eq: dict[str, Any]) -> dict[str, Any]:
    """What the history keeps of one refresh: its date and commit, the game value and both
    equilibria (with their supports), the sizes of the game, the adapted game's value."""
    entry: dict[str, Any] = {
        "date": eq["provenance"]["date"],
        "git_commit": eq["provenance"].get("git_commit"),
        "value": eq.get("value"),
        "defender": eq.get("defender") or {},
        "attacker": eq.get("attacker") or {},
        "defender_support": sorted(k for k, v in (eq.get("defender") or {}).items() if v > SUPPORT),
        "attacker_support": sorted(k for k, v in (eq.get("attacker") or {}).items() if v > SUPPORT),
        "excluded": sorted(eq.get("excluded") or {}),
    }
    if eq.get("adapted"):
        entry["adapted_value"] = eq["adapted"].get("value")
    return entry


def _same_game(a: dict[str, Any], b: dict[str, Any]) -> bool:
    close = (a.get("value") is None) == (b.get("value") is None) and (a.get("value") is None or abs(a["value"] - b["value"]) < 5e-4)
    keys = ("defender_support", "attacker_support", "excluded", "adapted_value")
    return close and set(a.get("defender") or {}) == set(b.get("defender") or {}) and set(a.get("attacker") or {}) == set(b.get("attacker") or {}) and all(a.get(k) == b.get(k) for k in keys)


def _entry_problem(h: Any) -> str | None:
    if not isinstance(h, dict) or not isinstance(h.get("date"), str):
        return "an entry is not an object with a date"
    value = h.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 1e6):
        return f"the value of {h['date']} is not a number"
    for side in ("defender", "attacker"):
        mix = h.get(side, {})
        if not isinstance(mix, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in mix.items()):
            return f"the {side} equilibrium of {h['date']} is not labels and weights"
    return None


def previous_answer(past: list[dict[str, Any]], eq: dict[str, Any], rerender: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """The last answer on record that differs from `eq`'s game, and the date since which `eq`'s
    game has stood when it is the last one on record (else None). `rerender`: `eq` is a board
    already on record (its pages rewritten), so its own entry is not an earlier answer."""
    entry = history_entry(eq)
    same_since = None
    rest = list(past)
    if rerender:
        while rest and rest[-1]["date"] == entry["date"] and _same_game(rest[-1], entry):
            rest.pop()
    while rest and _same_game(rest[-1], entry):
        same_since = rest.pop()["date"]
    return (rest[-1] if rest else None), same_since


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The refreshes of the board published in `folder`, oldest first. A board published before
    histories were kept starts its history with the equilibrium.json it has."""
    path = folder / "history.json"
    try:
        if path.exists():
            history = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(history, list):
                raise ValueError("it is not a list of refreshes")
            for h in history:
                if (problem := _entry_problem(h)) is not None:
                    raise ValueError(problem)
            return history
        if (folder / "equilibrium.json").exists():
            first = history_entry(json.loads((folder / "equilibrium.json").read_text(encoding="utf-8")))
            if (problem := _entry_problem(first)) is not None:
                raise ValueError(f"its equilibrium.json: {problem}")
            return [first]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise StoreError(
            f"Cannot read the published history of {folder} ({exc}); nothing was published. Restore history.json and equilibrium.json from the repository (git checkout -- {folder})."
        ) from None
    return []


def write_history(folder: Path, past: list[dict[str, Any]], eq: dict[str, Any]) -> list[dict[str, Any]]:
    """Append this refresh to the history, unless its game is the last one's: the history holds
    the answers the suite gave, and a re-refresh that changed nothing leaves it as it was."""
    entry = history_entry(eq)
    history = past if past and _same_game(past[-1], entry) else [*past, entry]
    atomic_write(folder / "history.json", (json.dumps(history, indent=1) + "\n").encode())
    return history


def _mixture_html(weights: dict[str, float]) -> str:
    e = html.escape
    parts = [f"<code>{e(k)}</code> {v:.0%}" for k, v in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])) if v > SUPPORT]
    return ", ".join(parts) or "—"


def value_plot(history: list[dict[str, Any]], width: int = 420, height: int = 120) -> str:
    """The game value per refresh as an inline SVG line (one point per refresh, labelled)."""
    points = [(i, h["value"]) for i, h in enumerate(history) if h.get("value") is not None]
    if not points:
        return "<p>(no game value yet)</p>"
    low, high = min(v for _, v in points), max(v for _, v in points)
    low, high = (low - 0.05, high + 0.05) if high - low < 0.1 else (low, high)
    pad, n = 30, max(len(history) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + (width - 2 * pad) * i / n, height - pad / 2 - (height - pad) * (v - low) / (high - low)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in points))
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3'><title>{html.escape(history[i]['date'])}: {v:.4f}</title></circle>" for i, v in points for x, y in [xy(i, v)])
    labels = "".join(f"<text x='{x:.1f}' y='{y - 6:.1f}' font-size='10' text-anchor='middle'>{v:.3f}</text>" for i, v in points for x, y in [xy(i, v)])
    return (f"<svg class='plot' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' aria-label='game value per refresh'>"
            f"<polyline fill='none' stroke='#2a6' stroke-width='2' points='{line}'/>{dots}{labels}</svg>")  # fmt: skip


def index_page(suites: list[tuple[str, dict[str, Any], list[dict[str, Any]]]], unreadable: list[tuple[str, str]] | None = None) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>arena leaderboards</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}td.s{text-align:left}svg.plot{border:1px solid #eee}</style>",
        "</head><body><h1>arena leaderboards</h1>",
        "<p>Every suite's zero-sum game (defender utility = clean accuracy − attack success rate) at its last refresh, and how its answer changed "
        "from one refresh to the next. Each suite's page has the evidence.</p>",
        "<table id='suites'><tr><th>suite</th><th>game value</th><th>defender equilibrium</th><th>attacker equilibrium</th><th>published</th><th>answers on record</th></tr>",
    ]
    for name, eq, history in suites:
        value = "—" if eq.get("value") is None else f"{eq['value']:.4f}"
        parts.append(
            f"<tr data-suite='{e(name)}'><td class='s'><a href='{e(name)}/index.html'>{e(eq.get('suite', name))}</a></td><td class='value'>{value}</td>"
            f"<td class='s'>{_mixture_html(eq.get('defender') or {})}</td><td class='s'>{_mixture_html(eq.get('attacker') or {})}</td>"
            f"<td>{e(str(eq.get('provenance', {}).get('date', '')))}</td><td>{len(history)}</td></tr>"
        )
    parts.append("</table>")
    if unreadable:
        parts.append("<p>Suites whose published files could not be read (restore them from the repository):</p><ul>"
                     + "".join(f"<li><code>{e(n)}</code>: {e(why)}</li>" for n, why in unreadable) + "</ul>")
    for name, eq, history in suites:
        parts.append(f"<h2 id='history-{e(name)}'>{e(eq.get('suite', name))}: how the answer changed</h2><p>Game value per refresh that changed the game.</p>{value_plot(history)}")
        parts.append(f"<table class='history' data-suite='{e(name)}'><tr><th>date</th><th>commit</th><th>game value</th><th>defender equilibrium</th><th>attacker equilibrium</th></tr>")
        for h in history:
            value = "—" if h.get("value") is None else f"{h['value']:.4f}"
            parts.append(f"<tr><td>{e(h['date'])}</td><td class='s'><code>{e(str(h.get('git_commit') or '')[:10])}</code></td><td class='value'>{value}</td>"
                         f"<td class='s'>{_mixture_html(h.get('defender') or {})}</td><td class='s'>{_mixture_html(h.get('attacker') or {})}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(root: Path) -> Path:
    """leaderboards/index.html: every suite folder under `root` with a published board."""
    suites, unreadable = [], []
    for folder in sorted(p for p in root.iterdir() if (p / "equilibrium.json").is_file()):
        try:  # one damaged suite is named on the index, and does not keep the others off it
            eq = json.loads((folder / "equilibrium.json").read_text(encoding="utf-8"))
            if not isinstance(eq, dict) or not isinstance(eq.get("provenance"), dict):
                raise ValueError("not a published equilibrium")
            if not isinstance(eq.get("suite", folder.name), str) or (problem := _entry_problem(history_entry(eq))) is not None:
                raise ValueError(problem or "its suite name is not text")
            suites.append((folder.name, eq, read_history(folder)))
        except (OSError, ValueError, RecursionError, StoreError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((folder.name, str(exc)[:200]))
    path = root / "index.html"
    atomic_write(path, index_page(suites, unreadable).encode())
    return path
