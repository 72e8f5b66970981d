"""`arena submit PACKAGE_DIR`: a plugin package's submission bundle (wheel, SHA-256, check report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from arena.cli import render
from arena.cli.options import number, output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="build a plugin package's submission bundle: its wheel, SHA-256 and `arena check` report")
    p.add_argument("package", help="the plugin package's folder (with its pyproject.toml)")
    p.add_argument("--output", type=output_file, default=None, help="the bundle to write (default: ./<wheel name>.arena-submission.zip)")
    p.add_argument("--time-budget", type=number(low=0, low_open=True), default=60.0, help="seconds one check run may take (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arena.submission import build_bundle

    def progress(message: str) -> None:
        render.err.print(render.plain(message))

    bundle, manifest = build_bundle(Path(args.package), args.output, time_budget_s=args.time_budget, progress=progress)
    names = ", ".join(f"{s['kind']} {s['name']}" for s in manifest["strategies"])
    render.out().print(
        f"wrote {render.plain(bundle)}: {render.plain(manifest['wheel'])} (SHA-256 {manifest['sha256']}), every check passed for {render.plain(names)} "
        f"with arena {render.plain(manifest['checked_with']['arena_version'])}.\n"
        f"A maintainer plays it with: arena leaderboard refresh SUITE --submission {render.plain(bundle.name)}"
    )
    return 0
