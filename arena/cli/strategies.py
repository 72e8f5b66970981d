"""`arena list` (a compact table) and `arena show NAME` (everything about one strategy)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from arena.cli import render
from arena.errors import UnknownNameError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lst = sub.add_parser("list", help="list registered attackers and defenders")
    lst.add_argument("kind", nargs="?", choices=["attackers", "defenders"], help="only this kind")
    lst.add_argument("--json", action="store_true", help="every strategy with its paper, deviations and full space")
    lst.set_defaults(func=run_list)
    show = sub.add_parser("show", help="one strategy: paper, deviations, requirements, full hyperparameter space")
    show.add_argument("name", help="registered name, e.g. neural_cleanse or package/name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)


def describe(cls: Any) -> dict[str, Any]:
    """A strategy class as data: what `list --json` and `show` print."""
    from arena.provenance import code_fingerprint

    requires = {k: getattr(cls, k) for k in ("min_clean", "changes_architecture") if hasattr(cls, k)}
    try:
        needs = cls().required_capabilities()  # with its defaults: a hyperparameter may add needs
    except Exception:  # a plugin that cannot be built with its defaults still gets listed
        needs = cls.requires
    if needs:
        requires["capabilities"] = [cap.__name__ for cap in needs]
    return {
        "name": cls.name,
        "kind": cls.kind,
        "version": cls.version,
        "summary": cls.summary(),
        "paper": cls.paper,
        "deviations": cls.deviations,
        "requires": requires,
        "code": code_fingerprint(cls),
        "params": {p: {"default": spec.default, "space": spec.describe(), "search": spec.search_range(), "help": spec.help} for p, spec in cls.space.items()},
    }


def _search_text(search: Any) -> str:
    """A declared search range as `arena oracle` reads it ("" when the parameter is not searched)."""
    if search is None:
        return ""
    if isinstance(search, dict):
        return ", ".join(map(str, search["choices"]))
    return f"[{search[0]}, {search[1]}]" + (" log" if len(search) > 2 else "")


def _registries(kind: str | None) -> list[Any]:
    from arena.registry import ATTACKERS, DEFENDERS

    return [r for r in (ATTACKERS, DEFENDERS) if kind in (None, r.kind + "s", r.kind)]


def run_list(args: argparse.Namespace) -> int:
    listing: dict[str, list[dict[str, Any]]] = {}
    console = render.out()
    with render.stdout_to_stderr():  # a plugin may print as it loads or is built
        for registry in _registries(args.kind):
            listing[registry.kind + "s"] = [
                {"name": name, "error": registry.plugin_errors.get(name, "failed to load")} if cls is None else {**describe(cls), "name": name}
                for name, cls in registry.all_classes().items()
            ]
    for kind, rows in listing.items():
        if not args.json:
            console.print(f"[bold]{kind}[/]")
            width = max(len(r["name"]) for r in rows)
            room = max(20, console.width - width - 8)  # one line per strategy, whatever the terminal
            for row in rows:
                text = f"unusable: {row['error']}" if "error" in row else row["summary"]
                text = text if len(text) <= room else text[: room - 1] + "…"
                console.print(f"  {row['name']:<{width}}  {row.get('version', ''):>2}  {text}", highlight=False, markup=False)
    if args.json:
        print(json.dumps(listing, default=str))
    else:
        console.print("[dim]`arena show NAME` for a strategy's paper, deviations, requirements and hyperparameters.[/]")
    return 0


def run_show(args: argparse.Namespace) -> int:
    found = []
    with render.stdout_to_stderr():  # a plugin may print as it loads or is built
        for registry in _registries(None):
            try:
                found.append(registry.get(args.name))
            except UnknownNameError:
                continue
        if not found:
            from arena.registry import ATTACKERS, DEFENDERS

            raise UnknownNameError("strategy", args.name, ATTACKERS.names() + DEFENDERS.names())
        described = [describe(cls) for cls in found]
    if args.json:
        print(json.dumps(described if len(described) > 1 else described[0], default=str))
        return 0
    console = render.out()
    for d in described:
        console.print(f"[bold]{render.plain(args.name)}[/] ({render.plain(d['kind'])}, version {render.plain(d['version'])}, code {render.plain(d['code'])})", highlight=False)
        console.print(d["summary"], highlight=False, markup=False)
        console.print(f"[bold]paper[/]: {render.plain(d['paper'])}", highlight=False)
        console.print(f"[bold]deviations[/]: {render.plain(d['deviations'])}", highlight=False)
        if d["requires"]:
            console.print("[bold]requires[/]: " + render.plain(", ".join(f"{k}={v}" for k, v in d["requires"].items())), highlight=False)
        table = Table(title="hyperparameters", title_justify="left")
        for column in ("name", "default", "space", "searched over", "meaning"):
            table.add_column(column, overflow="fold")
        for p, v in d["params"].items():
            table.add_row(*(render.plain(cell) for cell in (p, repr(v["default"]), v["space"], _search_text(v["search"]), v["help"] or "")))
        console.print(table if d["params"] else "no hyperparameters")
    return 0
