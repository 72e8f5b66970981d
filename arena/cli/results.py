"""`arena results`: a suite's rows as a table, CSV, JSON or Parquet; `arena results import`: a
published results.csv into the local store (its rows as the starting state of a refresh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arena.cli import render
from arena.cli.options import output_file, write_output
from arena.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("results", help="a suite's results as a table or a file")
    p.add_argument("suite", help="suite name, or its YAML file / folder; or `import` followed by a published results.csv")
    p.add_argument("file", nargs="?", help="import: the published results.csv (e.g. leaderboards/fashion_mnist/results.csv)")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    p.add_argument("--output", type=output_file, default=None, help="write to this file instead of stdout (replaced whole, never left half-written)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arena.results import default_results
    from arena.suite import load_suite

    if args.suite == "import":
        return import_published(args.file)
    if args.file is not None:
        raise UsageError(f"`arena results {args.suite}` takes one suite; a second argument ({args.file!r}) is only for `arena results import FILE`.")
    name = args.suite
    if Path(name).exists():
        name = load_suite(name).name
    results = default_results()
    frame = results.frame(name)
    if frame.empty:
        known = results.suites()
        raise UsageError(f"no results for suite {name!r}. Suites with results: {', '.join(known) if known else '(none)'}.")
    render.warn_mixed_numerics(frame)
    if args.format == "table":
        render.out().print(render.results_table(frame, f"suite {name}"))
    elif args.format == "parquet":
        if not args.output:
            raise UsageError("--format parquet needs --output FILE (it is binary).")
        write_output(args.output, frame.to_parquet(index=False))
    else:
        text = frame.to_csv(index=False) if args.format == "csv" else frame.to_json(orient="records", indent=1)
        text = text if text.endswith("\n") else text + "\n"
        if args.output:
            write_output(args.output, text.encode())
        else:
            sys.stdout.write(text)
    return 0


def import_published(file: str | None) -> int:
    from arena.leaderboard import published_date
    from arena.results import default_results, read_published

    if file is None:
        raise UsageError("`arena results import` needs the published results.csv to read, e.g. `arena results import leaderboards/fashion_mnist/results.csv`.")
    path = Path(file)
    if path.is_dir():
        path = path / "results.csv"
    rows = read_published(path)
    results = default_results()
    date = published_date(path.parent)  # the board's date, when the file sits in a published board
    added = {suite: results.import_rows(suite, [r for r in rows if r["suite"] == suite], updated=date) for suite in sorted({r["suite"] for r in rows})}
    for suite, n in added.items():
        held = sum(r["suite"] == suite for r in rows) - n
        render.err.print(f"suite {render.plain(suite)}: imported {n} published rows from {render.plain(path)}" + (f"; kept the {held} rows this store already had for the same cells" if held else ""))
    if not rows:
        render.err.print(f"{render.plain(path)} holds no rows; nothing imported")
    return 0
