"""Every terminal view of the CLI in one place: tables, progress, the match, the board, verify.

Results go to stdout (`out`); progress, warnings and errors to stderr (`err`). Text a user or a
strategy supplied (names, labels, parameters, paths, error messages) goes through `plain` before
it enters a markup string or a table cell: rich would read `[...]` in it as markup, dropping it
or failing on it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

err = Console(stderr=True)


def out() -> Console:
    """A console on the current stdout (made per call: tests capture stdout)."""
    return Console()


def plain(value: object) -> str:
    """`value` as text for a markup string or a table cell, its brackets shown as typed."""
    return escape(str(value))


def error(message: str) -> None:
    """The one paragraph of a failed command on stderr; the message is never read as markup."""
    err.print(Text.assemble(("arena: error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


class _NoticeHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        kind = ("arena: note:", "yellow") if record.levelno < logging.WARNING else ("arena: warning:", "bold yellow")
        err.print(Text.assemble(kind, " ", record.getMessage()), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def notice_logging() -> Iterator[None]:
    """While a command runs, what the library tells its user through logging (logger `arena`,
    INFO and above: e.g. which copy of a dataset it read) is a line on stderr."""
    logger = logging.getLogger("arena")
    handler = _NoticeHandler(logging.INFO)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one line, even where the root logger has a handler of its own
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While the work of a command runs, everything written to stdout goes to stderr: a
    strategy's print, and also what reaches file descriptor 1 directly (C extensions, and the
    processes started meanwhile, which inherit it: Ray's raylet and workers, a match's training
    processes, for as long as they live). Stdout then holds the result alone, written after the
    block: the JSON of `--json` stays parseable whatever a worker prints or however it dies."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (a closed stdout): nothing below can write to it either
        saved = None
    try:
        if saved is not None:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for stream in (sys.__stdout__, sys.stdout):  # what was buffered meanwhile still goes to stderr
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def stage_progress(quiet: bool) -> Progress:
    """A transient progress display on stderr for (stage, done, total) reports."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True, disable=quiet)


class RichProgress:
    """Adapts the strategies' (stage, done, total) reports to a rich progress display."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            if len(self.tasks) >= 200:  # a strategy's stage names are its own text: a flood of them is not drawn
                return
            self.tasks[stage] = self.progress.add_task(plain(stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def match(result: dict[str, Any], console: Console) -> None:
    a, d = result["attacker"], result["defender"]
    title = plain(f"{a['name']} v{a['version']}  vs  {d['name']} v{d['version']}   ({result['dataset']}, seed {result['seed']})")
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("clean accuracy", justify="right")
    table.add_column("attack success", justify="right")
    table.add_row("honest baseline", fmt(result["honest"]["ca"]), "")
    table.add_row("attacked, undefended", fmt(result["attacked"]["ca"]), fmt(result["attacked"]["asr"]))
    table.add_row("attacked, defended", fmt(result["defended"]["ca"]), fmt(result["defended"]["asr"]))
    console.print(table)
    per_trigger = result["attacked"]["asr_per_trigger"]
    if len(per_trigger) > 1:
        for name in per_trigger:
            console.print(f"  trigger {plain(name)}: ASR {fmt(per_trigger[name])} → {fmt(result['defended']['asr_per_trigger'][name])}")
    if "frr" in result["defended"]:
        console.print(f"  input filter: false rejections {fmt(result['defended']['frr'])} of clean inputs")
    verdict = result["defended"]["verdict"]
    if verdict is not None:
        flagged = "[red]flagged[/]" if verdict["flagged"] else "not flagged"
        console.print(f"  verdict: {flagged}, score {verdict['score']:.3f}, suspected labels {plain(verdict['labels'])}")
    if result["defended"].get("not_applicable"):
        console.print(f"  [yellow]n/a[/]: {plain(result['defended']['not_applicable'])}; the defense was not run and the published model is deployed as it is")
    if result["defended"].get("deployed") == "fallback":
        console.print("  deployed: the fallback model (flagged and not repaired: the verdict rule)")
    stealth = "[green]stealthy[/]" if result["stealthy"] else "[yellow]not stealthy[/] (undefended CA more than the tolerance below honest)"
    console.print(f"  defender utility CA − ASR: [bold]{result['utility']:+.3f}[/]    attack: {stealth}")
    s = result["seconds"]
    cache = " (attacked model from the store)" if result["cached"] else ""
    console.print(f"  seconds: attack {s['attack']:.1f}{cache}, defense {s['defense']:.1f}, this run {s['total']:.1f}")
    console.print(f"  clean samples given to the defender: {result['clean_samples']}")
    from arena.provenance import numerics_label

    console.print(f"  numerics: {plain(numerics_label(result.get('numerics')))}", highlight=False)


def results_table(frame: Any, title: str) -> Table:
    from arena.leaderboard import label_frame

    table = Table(title=plain(title), title_justify="left")
    table.add_column("attacker", overflow="fold", min_width=14)
    table.add_column("defender", overflow="fold", min_width=12)
    for column in ("seed", "status", "CA", "ASR", "CA def.", "ASR def.", "u_D", "stealthy"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for row in label_frame(frame).sort_values(["attacker_label", "defender_label", "seed"]).itertuples():
        status = row.status if row.status == "ok" else f"[red]{plain(row.status)}[/]"
        if row.status == "ok" and isinstance(getattr(row, "not_applicable", None), str):
            status = "[yellow]n/a[/]"  # the defense could not act on this model: the row scores it undefended
        ok = row.status == "ok"
        table.add_row(
            plain(row.attacker_label),
            plain(row.defender_label),
            str(row.seed),
            status,
            *(fmt(getattr(row, c)) if ok else "" for c in ("attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility")),
            ("yes" if row.stealthy else "[yellow]no[/]") if ok else plain(str(row.error or "")[:60]),
        )
    return table


def warn_mixed_numerics(frame: Any) -> None:
    """Rows of one table computed under different numerics are never mixed silently."""
    from arena.leaderboard import numerics_counts

    counts = numerics_counts(frame) if not frame.empty else {}
    if len(counts) > 1:
        err.print("[yellow]mixed numerics[/]: these rows were computed under " + plain("; ".join(f"{k} ({v} rows)" for k, v in counts.items())), highlight=False)


def equilibrium(solution: Any, rows: list[str], cols: list[str], console: Console) -> None:
    console.print(f"game value (defender utility at equilibrium): [bold]{solution.value:.4f}[/]   exploitability {solution.exploitability:.2e}")
    for side, labels, mix in (("defender", rows, solution.defender), ("attacker", cols, solution.attacker)):
        table = Table(title=f"{side} equilibrium mixture (maximum entropy)", title_justify="left")
        table.add_column(side)
        table.add_column("probability", justify="right")
        for label, p in sorted(zip(labels, mix), key=lambda t: -t[1]):
            table.add_row(plain(label), f"{p:.4f}")
        console.print(table)


def board(b: Any, console: Console) -> None:
    if b.solution is None:
        console.print("[yellow]No complete game: every strategy of one side was left out.[/]")
    else:
        console.print(f"[bold]{plain(b.suite)}[/]: game value {b.solution.value:.3f} (defender utility at equilibrium), exploitability {b.solution.exploitability:.1e}")
        s = b.scores
        for side, labels, mix in (("defender", b.defenders, b.solution.defender), ("attacker", b.attackers, b.solution.attacker)):
            table = Table(title=f"{side}s", title_justify="left")
            for column in ("rank", side, "Nash-averaged [90% interval]", "worst case [90% interval]", "worst rank", "eq. weight"):
                table.add_column(column, justify="left" if column == side else "right")
            order = sorted(range(len(labels)), key=lambda i: (-s[f"{side}_nash"][i], labels[i]))
            for i in order:
                table.add_row(
                    str(s[f"{side}_nash_rank"][i]),
                    plain(labels[i]),
                    f"{s[f'{side}_nash'][i]:+.3f} [{s[f'{side}_nash_lo'][i]:+.3f}, {s[f'{side}_nash_hi'][i]:+.3f}]",
                    f"{s[f'{side}_worst'][i]:+.3f} [{s[f'{side}_worst_lo'][i]:+.3f}, {s[f'{side}_worst_hi'][i]:+.3f}]",
                    str(s[f"{side}_worst_rank"][i]),
                    f"{mix[i]:.3f}",
                )
            console.print(table)
        matrix = Table(title="defender utility CA − ASR (rows: defenders, columns: attackers), mean ± sd; CA / ASR below", title_justify="left", show_lines=True)
        matrix.add_column("")
        for c in b.attackers:
            matrix.add_column(plain(c), justify="right", overflow="fold")
        u, usd, ca, asr = b.matrix, b.spread("utility"), b.mean("defended_ca"), b.mean("defended_asr")
        for i, r in enumerate(b.defenders):
            cells = []
            for j in range(len(b.attackers)):
                colour = "green" if u[i, j] > 0.5 else "yellow" if u[i, j] > 0 else "red"
                na = "n/a, " if (r, b.attackers[j]) in b.not_applicable else ""  # the defense could not act: scored undefended
                cells.append(Text.assemble((f"{na}{u[i, j]:+.3f} ± {usd[i, j]:.3f}", colour), f"\n{ca[i, j]:.3f} / {asr[i, j]:.3f}"))
            matrix.add_row(plain(r), *cells)
        console.print(matrix)
    if b.detection:
        table = Table(title="detection (model-level verdicts; backdoored = attacker not `none`)", title_justify="left")
        for column in ("defender", "backdoored", "honest", "TPR", "FPR", "AUROC", "target hit"):
            table.add_column(column, justify="left" if column == "defender" else "right")
        for d, r in sorted(b.detection.items()):
            table.add_row(plain(d), str(r["backdoored"]), str(r["honest"]), *(fmt(r[k]) for k in ("tpr", "fpr", "auroc", "target_hit")))
        console.print(table)
    if len(b.numerics) > 1:
        console.print("[yellow]mixed numerics[/]: " + plain("; ".join(f"{k}: {v} rows" for k, v in b.numerics.items())))
    elif b.numerics:
        console.print(f"numerics: {plain(next(iter(b.numerics)))}")
    if b.stale:
        console.print(f"[yellow]{len(b.stale)} stale rows[/] (their strategy's code changed since; `arena leaderboard refresh` re-runs them), e.g. {plain(next(iter(b.stale.values())))}")
    for label, why in sorted(b.excluded.items()):
        console.print(f"[yellow]left out[/] {plain(label)}: {plain(why)}")


def _pair(check: Any, key: str) -> str:
    reproduced = check.reproduced.get(key)
    return f"{check.published[key]:.3f} / " + ("—" if reproduced is None else f"{reproduced:.3f}")


def verification(suite: str, checks: list[Any], console: Console) -> None:
    table = Table(title=f"{plain(suite)}: published / reproduced", title_justify="left")
    for column in ("#", "attacker", "defender", "seed", "CA", "ASR", "u_D", "model sha256"):
        table.add_column(column, justify="right" if column in ("CA", "ASR", "u_D", "seed") else "left", overflow="fold")
    for i, c in enumerate(checks, 1):
        sha = f"{c.published['artifact_sha256'][:8]} / {str(c.reproduced.get('artifact_sha256', '—'))[:8]}"
        table.add_row(str(i), plain(c.attacker), plain(c.defender), str(c.seed), *(_pair(c, k) for k in ("ca", "asr", "utility")), sha)
    console.print(table)
    for i, c in enumerate(checks, 1):
        console.print(f"  {i}. " + ("[green]reproduces[/]" if c.reproduces else "[red]DIFFERS[/]") + f": {plain(c.why)}", highlight=False)
    differ = sorted({d for c in checks for d in c.numerics_differ})
    if differ:
        console.print("numerics that differ from the published rows: " + plain("; ".join(differ)), highlight=False)
    console.print(f"{sum(c.reproduces for c in checks)} of {len(checks)} cells reproduce.")


def check_report(kind: str, strategy: str, results: list[Any], console: Console) -> None:
    table = Table(title=plain(f"contract of {kind} {strategy}"), title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in results:
        table.add_row(plain(c.name), "[green]pass[/]" if c.ok else "[red]FAIL[/]", plain(c.detail))
    console.print(table)


def doctor_report(report: dict[str, Any], console: Console) -> None:
    sandbox = report["sandbox"]
    colour = "green" if sandbox["mode"] == "bwrap" else "yellow"
    console.print(f"sandbox: [{colour}]{plain(sandbox['mode'])}[/] (ARENA_SANDBOX={plain(sandbox['asked'])})")
    console.print(f"  bubblewrap: {plain(sandbox['bwrap'])}")
    console.print(f"  guarantees: {plain(sandbox['guarantees'])}")
    console.print(f"state home (ARENA_HOME): {plain(report['arena_home'])}")
    console.print(f"torch {plain(report['torch'])}; CUDA device: {'yes' if report['cuda'] else 'no'}")
