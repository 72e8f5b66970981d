"""`arena leaderboard show|refresh|verify`: a suite's board, its publication, its verification."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from arena.cli import render
from arena.cli.options import number, seed
from arena.cli.tournament import add_cluster_options, play
from arena.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="show, refresh or verify a suite's leaderboard")
    p.add_argument("action", choices=["show", "refresh", "verify"], help="show the board, refresh it (run missing or stale cells and publish), or verify published cells")
    p.add_argument("suite", help="suite name (folder under ./leaderboards/) or suite.yaml path")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="NAME", help="refresh: also play this registered strategy (e.g. a plugin package/name)")
    p.add_argument("--submission", action="append", default=[], metavar="BUNDLE", help="refresh: play a submission bundle (`arena submit`) against every opponent: "
                   "its wheel's hash matched, installed in isolation, checked again here, run sandboxed")
    p.add_argument("--check-budget", type=number(low=0, low_open=True), default=120.0, help="refresh --submission: seconds one check run of a submitted strategy may take (default 120)")
    p.add_argument("--pages-only", action="store_true", help="refresh: rewrite the published board's pages from its results.csv as it is (after a change to the pages), playing nothing")
    p.add_argument("--include-nonstealthy", action="store_true", help="keep attacks that fail the stealth gate in the game")
    add_cluster_options(p)
    p.add_argument("--cells", type=int, default=5, help="verify: how many published cells to re-play (default 5)")
    p.add_argument("--seed", type=seed, default=0, help="verify: seed of the random choice of cells (default 0)")
    p.add_argument("--tolerance", type=number(low=0), default=0.02, help="verify: allowed gap in CA, ASR and utility under other numerics (default 0.02)")
    p.add_argument("--json", action="store_true", help="verify: one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return verify(args)
    from arena.registry import plugin_paths, remove_plugin_path

    before = set(plugin_paths())
    try:
        return show_or_refresh(args)
    finally:  # a submission's folder leaves the path with the command (its files go at exit)
        for path in [p for p in plugin_paths() if p not in before]:
            remove_plugin_path(path)


def show_or_refresh(args: argparse.Namespace) -> int:
    from arena.leaderboard import _adapted_html, _adapted_lines, build_board, publish, published_date, unplayed
    from arena.results import default_results, published_frame, read_published
    from arena.suite import find_suite, load_suite, suite_frame, with_strategies

    path = find_suite(args.suite)
    suite = load_suite(path)
    results = default_results()
    published = path.parent / "results.csv"
    submissions = []
    if args.action == "refresh":
        if args.pages_only:  # refused before anything is installed or read
            if not published.exists():
                raise UsageError(f"--pages-only rewrites a published board's pages, and {published} does not exist; run `arena leaderboard refresh {args.suite}`.")
            if args.submission or args.with_:
                raise UsageError("--pages-only plays nothing, so it takes no --with or --submission.")
        if args.submission:
            submissions = open_submissions(args)
            suite = with_strategies(suite, [name for s in submissions for _, name in s.strategies])
        if args.with_:
            suite = with_strategies(suite, args.with_)
        if not args.pages_only and published.exists():  # the published rows are the starting state: only missing or stale cells are played
            added = results.import_rows(suite.name, read_published(published, suite.name), updated=published_date(path.parent))
            if added:
                render.err.print(f"started from the {added} published rows of {render.plain(published)} this store did not hold")
        if not args.pages_only:
            with render.stdout_to_stderr():  # Ray starts in here: its processes never write to our stdout
                play(suite, results, address=args.address, cpus=args.cpus, quiet=args.quiet, device=args.device, amp=args.amp, gpus_per_task=args.gpus_per_task)
    # the published rows as they are (pages only), or the suite's rows in the store as it is now
    frame = published_frame(published, suite.name) if args.action == "refresh" and args.pages_only else suite_frame(suite, results)
    if frame.empty and args.action == "show" and published.exists():
        # nothing of this suite played here: the board as it was published (its rows as they
        # are, also those of strategy versions the installed code has moved past)
        date = published_date(path.parent)
        frame = published_frame(published, suite.name, updated=date)
        render.err.print(f"the published board of {render.plain(path.parent)} ({len(frame)} rows, {date or 'undated'}); this store holds no results of suite "
                         f"{render.plain(suite.name)}: `arena leaderboard refresh {render.plain(args.suite)}` plays what the installed code changed")
    if frame.empty:
        raise UsageError(f"suite {suite.name!r} has no results yet; run `arena leaderboard refresh {args.suite}`.")
    board = build_board(frame, suite.name, include_nonstealthy=args.include_nonstealthy)
    if args.action == "refresh":
        from arena.adaptive import load_adapted
        from arena.store import arena_home
        from arena.submission import provenance_entries

        adapted = load_adapted(suite, arena_home())
        if args.pages_only and (path.parent / "adapted.json").exists():  # the published adapted game, as published
            try:
                adapted = json.loads((path.parent / "adapted.json").read_text(encoding="utf-8"))
                if not isinstance(adapted, dict):
                    raise ValueError("not a JSON object")
                _adapted_lines(adapted), _adapted_html(adapted)  # the pages can show it: every field there and of its kind
            except (OSError, ValueError, RecursionError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise UsageError(f"Cannot read {path.parent / 'adapted.json'} ({exc}); restore it from the repository. Nothing was published.") from None
        played = {name: entry for submission in submissions for name, entry in provenance_entries(submission).items()}  # the bundle's hash beside its strategies' rows
        publish(board, frame, path.parent, adapted, missing=unplayed(suite, frame), date=published_date(path.parent) if args.pages_only else None, submitted=played)
        files = "results.csv, equilibrium.json, history.json, README.md, index.html, heatmaps" + (", ../index.html" if path.parent.parent.name == "leaderboards" else "")
        files += (", submissions.json" if submissions else "") + (", adapted.json (the game `arena oracle` grew)" if adapted else "")
        render.err.print(f"published {render.plain(path.parent)}/: {files}")
    render.board(board, render.out())
    return 0


def open_submissions(args: argparse.Namespace) -> list[Any]:
    """Verify and install each bundle into a folder of its own outside ARENA_HOME (which the
    sandbox hides), kept for this process's life, and run `arena check` on its strategies here:
    the bundle's own report is the author's word, this one is the maintainer's. Their code runs
    sandboxed like any plugin's (its module imported here for its metadata only after an import
    probe in a sandbox: docs/design.md §1)."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from arena.contract import check
    from arena.submission import SubmissionError, on_path, open_bundle

    if args.address or os.environ.get("RAY_ADDRESS"):
        raise UsageError(
            "--submission installs the bundle on this machine only, so it cannot be played on a Ray cluster (--address / RAY_ADDRESS); "
            "refresh on one machine, or install the wheel on every node and use --with."
        )
    opened = []
    for bundle in args.submission:
        workdir = Path(tempfile.mkdtemp(prefix="arena-submission-"))
        atexit.register(shutil.rmtree, workdir, True)
        submission = open_bundle(Path(bundle), workdir)
        on_path(submission.site)
        failed = []
        for kind, name in submission.strategies:
            render.err.print(f"checking {kind} {render.plain(name)} of {render.plain(submission.bundle.name)} (`arena check`)")
            failed += [f"{name}: {c.name} ({c.detail[:160]})" for c in check(kind, name, time_budget_s=args.check_budget) if not c.ok]
        if failed:
            raise SubmissionError(f"{submission.bundle.name} fails {len(failed)} check(s) here, whatever its report says: " + "; ".join(failed) + ". Refused; nothing was played.")
        names = ", ".join(name for _, name in submission.strategies)
        render.err.print(
            f"submission {render.plain(submission.bundle.name)}: its wheel matches the SHA-256 it records ({submission.manifest['sha256'][:16]}…) and passes every check here; "
            f"{render.plain(names)} installed in isolation at {render.plain(submission.site)}"
        )
        opened.append(submission)
    return opened


def verify(args: argparse.Namespace) -> int:
    from arena.device import resolve
    from arena.suite import find_suite, load_suite
    from arena.verify import choose, published_rows, verify_cells

    # published rows are CPU rows: a verification replays them on CPU unless told otherwise
    compute = resolve("cpu" if args.device == "auto" else args.device, args.amp)
    path = find_suite(args.suite)
    suite = load_suite(path)
    chosen = choose(published_rows(path.parent, suite.name), args.cells, args.seed, suite.name)
    render.err.print(f"verifying {len(chosen)} published cells of {render.plain(suite.name)} from an empty store (seed {args.seed})")
    with render.stdout_to_stderr(), render.stage_progress(args.quiet) as progress:
        checks = verify_cells(chosen, suite, tolerance=args.tolerance, progress=render.RichProgress(progress), compute=compute)
    ok = sum(c.reproduces for c in checks)
    if args.json:
        print(json.dumps({"suite": suite.name, "cells": len(checks), "reproduced": ok, "checks": [c.to_dict() for c in checks]}))
    else:
        render.verification(suite.name, checks, render.out())
    return 0 if ok == len(checks) else 1
