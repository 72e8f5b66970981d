"""The published boards as a starting state and as a site: results.csv read back into rows, `show`
on a fresh machine, the page's answer in words, the history of refreshes, the index across suites."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_leaderboard import TALK, _browser, _frame

from arena.errors import StoreError
from arena.leaderboard import build_board, label_frame, publish
from arena.results import ResultsStore, published_frame, read_published

REPO = Path(__file__).parent.parent
BOARDS = REPO / "leaderboards"


@pytest.mark.parametrize("suite", ["fashion_mnist", "digits-smoke"])
def test_a_published_results_csv_reads_back_into_the_rows_it_was_written_from(suite, tmp_path):
    """Byte for byte: the rows imported from a published file publish the same file again."""
    source = BOARDS / suite / "results.csv"
    store = ResultsStore(tmp_path / "results.sqlite")
    rows = read_published(source, suite)
    assert store.import_rows(suite, rows) == len(rows) > 0
    assert store.import_rows(suite, rows) == 0  # a row held is never replaced
    tidy = label_frame(store.frame(suite)).drop(columns=["updated"]).sort_values(["attacker_label", "defender_label", "seed"])
    assert tidy.to_csv(index=False) == source.read_text()


def test_a_published_row_whose_key_is_not_its_spec_is_refused_naming_the_line(tmp_path):
    text = (BOARDS / "digits-smoke" / "results.csv").read_text().splitlines()
    header, first = text[0], text[1]
    # the row of one cell presented as another's result: its defender renamed, its key kept
    forged = first.replace(",fine_pruning,", ",fine_tuning,", 1) if ",fine_pruning," in first else first.replace(",none,", ",pruning,", 1)
    assert forged != first
    (tmp_path / "results.csv").write_text("\n".join([header, *text[1:], forged]) + "\n")
    with pytest.raises(StoreError, match=rf"line {len(text) + 1}, is not a sound published row \(its match_key .* is not the hash of its spec"):
        read_published(tmp_path / "results.csv", "digits-smoke")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(StoreError, match="is not a published results.csv: it lacks the columns"):
        read_published(tmp_path / "other.csv")


def test_show_on_a_fresh_machine_renders_the_published_board(arena_home, capsys, monkeypatch):
    from arena.cli import main

    monkeypatch.chdir(REPO)
    assert main(["leaderboard", "show", "fashion_mnist"]) == 0
    captured = capsys.readouterr()
    value = json.loads((BOARDS / "fashion_mnist" / "equilibrium.json").read_text())["value"]
    assert f"game value {value:.3f}" in captured.out
    assert "the published board of leaderboards/fashion_mnist" in " ".join(captured.err.split())
    assert not (arena_home / "results.sqlite").exists() or ResultsStore(arena_home / "results.sqlite").frame("fashion_mnist").empty  # nothing imported by show


def test_results_import_adds_the_published_rows_and_keeps_local_ones(arena_home, capsys):
    from arena.cli import main

    source = BOARDS / "digits-smoke" / "results.csv"
    assert main(["results", "import", str(source)]) == 0
    assert "imported 24 published rows" in capsys.readouterr().err
    assert main(["results", "import", str(source.parent)]) == 0  # the folder names its results.csv
    assert "kept the 24 rows this store already had" in " ".join(capsys.readouterr().err.split())
    assert main(["results", "import"]) == 2
    assert "needs the published results.csv" in capsys.readouterr().err


def _published_pair(tmp_path, grids):
    """A suite folder published once per grid, in order (each a refresh)."""
    folder = tmp_path / "leaderboards" / "t"
    eqs = []
    for grid in grids:
        frame = _frame(grid)
        eqs.append(publish(build_board(frame, "t", replicates=20), frame, folder))
    return folder, eqs


def test_the_page_opens_with_the_answer_in_words(tmp_path):
    folder, (eq,) = _published_pair(tmp_path, [TALK])
    first, second, left, since = eq["answer"][:4]  # then a caveat: these rows record no code fingerprints
    # TALK: fine_pruning dominates (0.968 against badnets, its worst); badnets is the attacker's best reply
    assert "Against the 2 attackers in this game, the defender's best play is `fine_pruning` (100%)" in first and "at 0.968 or more" in first
    assert "the attacker's best play is `badnets` (100%)" in first
    assert "the best single defense is `fine_pruning` (0.968)" in second
    assert left == "**Not in the game.** Nothing: every strategy of the suite played every cell."
    assert since == "**Since the last refresh.** This is the first refresh on record."
    page = (folder / "README.md").read_text()
    assert page.index("Which defense holds up") < page.index("## The evidence") < page.index("## Defenders")
    html = (folder / "index.html").read_text()
    assert html.index("id='answer'") < html.index("The evidence") and "<code>fine_pruning</code> (100%)" in html


def test_the_arrival_of_the_adapted_game_is_said_since_the_last_refresh():
    from arena.leaderboard import _changes

    previous = {"date": "2026-01-01", "value": 0.3, "defender": {"strip": 1.0}, "attacker": {"badnets": 1.0}, "defender_support": ["strip"], "attacker_support": ["badnets"]}
    eq = {"value": 0.3, "defender": {"strip": 1.0}, "attacker": {"badnets": 1.0}, "adapted": {"value": 0.2}}
    assert _changes(eq, previous) == "Compared with 2026-01-01: the game value stayed at 0.300; the adapted game (`arena oracle`) is published, value 0.200."
    assert "the adapted game's value went from 0.250 to 0.200" in _changes(eq, {**previous, "adapted_value": 0.25})
    assert "adapted" not in _changes(eq, {**previous, "adapted_value": 0.2})


def test_what_is_left_out_and_what_changed_are_said(tmp_path):
    loud = {**TALK, ("fine_tuning", "loud"): [0.0, 0.0], ("fine_pruning", "loud"): [0.0, 0.0]}
    folder = tmp_path / "leaderboards" / "t"
    eq0 = publish(build_board(_frame(TALK), "t", replicates=20), _frame(TALK), folder)
    frame = _frame({**loud, ("none", "badnets"): [-0.1, -0.1], ("none", "pruning_aware"): [-0.1, -0.1], ("none", "loud"): [0.0, 0.0]}, stealthy={"loud": False})
    eq1 = publish(build_board(frame, "t", replicates=20), frame, folder)
    assert "`loud` left out as not stealthy" in eq1["answer"][2]
    since = eq1["answer"][3]
    assert f"Compared with {eq0['provenance']['date']}" in since and "defenders added: `none`" in since and "stayed at 0.968" in since
    assert "With no defense (`none`) the worst attack brings utility to -0.100" in eq1["answer"][1]


def test_the_history_keeps_each_answer_once_and_the_site_lists_every_suite(tmp_path):
    changed = {**TALK, ("fine_pruning", "badnets"): [0.9, 0.9]}
    folder, eqs = _published_pair(tmp_path, [TALK, TALK, changed])
    history = json.loads((folder / "history.json").read_text())
    assert [round(h["value"], 3) for h in history] == [0.968, 0.9]  # the unchanged re-refresh added nothing
    assert history[-1]["defender_support"] == ["fine_pruning"]
    assert "Nothing changed: this answer has stood since" in eqs[1]["answer"][3] and "the game value went from 0.968 to 0.900" in eqs[2]["answer"][3]
    index = (folder.parent / "index.html").read_text()
    assert "data-suite='t'" in index and "<svg" in index and index.count("<circle") == 2
    assert "href='t/index.html'" in index and "href='../index.html'" in (folder / "index.html").read_text()


@pytest.mark.parametrize("history", ["{not json", "[1]", '[{"date": "x", "value": "high"}]', '[{"date": "x", "value": 0.5, "defender": [1]}]'])
def test_a_damaged_history_is_a_clear_error_and_nothing_is_published(tmp_path, history):
    folder, _ = _published_pair(tmp_path, [TALK])
    (folder / "history.json").write_text(history)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    changed = {**TALK, ("fine_pruning", "badnets"): [0.9, 0.9]}
    with pytest.raises(StoreError, match="Cannot read the published history"):
        publish(build_board(_frame(changed), "t", replicates=20), _frame(changed), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not one file written


def test_a_damaged_suite_is_named_on_the_index_and_keeps_no_other_off_it(tmp_path):
    folder, _ = _published_pair(tmp_path, [TALK])
    broken = folder.parent / "broken"
    broken.mkdir()
    (broken / "equilibrium.json").write_text("[]")
    _published_pair(tmp_path, [TALK])  # publishes t again: the index is rewritten
    index = (folder.parent / "index.html").read_text()
    assert "data-suite='t'" in index and "<code>broken</code>: not a published equilibrium" in index


def test_published_rows_with_impossible_figures_repeated_cells_or_odd_parameters_are_refused(tmp_path):
    import csv

    source = BOARDS / "digits-smoke" / "results.csv"
    rows = list(csv.DictReader(source.open()))

    def refused(change, message):
        edited = [dict(r) for r in rows]
        change(edited)
        with (tmp_path / "r.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(edited)
        with pytest.raises(StoreError, match=message):
            read_published(tmp_path / "r.csv", "digits-smoke")

    refused(lambda r: r[0].update(defended_asr="0.0"), "its utility .* is not its defended CA minus its defended ASR")  # a better score, its utility kept
    refused(lambda r: r[0].update(defended_asr="1.5", utility=str(float(r[0]["defended_ca"]) - 1.5)), r"its defended ASR is 1.5, not a rate in \[0, 1\]")
    refused(lambda r: r.append(dict(r[0])), "line 26, repeats the cell of line 2")
    refused(lambda r: r[0].update(attacker_params="[]"), "its parameters are not JSON objects")


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium here (.ci/run installs it)")
def test_the_site_index_renders_in_a_headless_browser_with_the_numbers_of_the_json(tmp_path):
    root = tmp_path / "boards"
    shutil.copytree(BOARDS, root, ignore=shutil.ignore_patterns("index.html"))
    from arena.site import write_index

    write_index(root)
    proc = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (root / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dom = proc.stdout
    assert "id=\"suites\"" in dom, proc.stderr[-500:]
    suites = sorted(p.name for p in root.iterdir() if (p / "equilibrium.json").exists())
    assert len(suites) >= 2
    for name in suites:
        eq = json.loads((root / name / "equilibrium.json").read_text())
        row = re.search(rf"<tr data-suite=\"{re.escape(name)}\">(.*?)</tr>", dom, re.S)
        assert row, name
        assert float(re.search(r"class=\"value\">([-0-9.]+)<", row.group(1)).group(1)) == pytest.approx(eq["value"], abs=1e-4)
        table = re.search(rf"<table class=\"history\" data-suite=\"{re.escape(name)}\">(.*?)</table>", dom, re.S)
        values = [float(v) for v in re.findall(r"class=\"value\">([-0-9.]+)<", table.group(1))]
        history = json.loads((root / name / "history.json").read_text()) if (root / name / "history.json").exists() else [eq]
        assert values == pytest.approx([h["value"] for h in history], abs=1e-4)


def test_published_frame_is_the_frame_of_the_imported_rows(tmp_path):
    source = BOARDS / "digits-smoke" / "results.csv"
    store = ResultsStore(tmp_path / "r.sqlite")
    store.import_rows("digits-smoke", read_published(source, "digits-smoke"))
    a = published_frame(source, "digits-smoke").drop(columns=["updated"]).sort_values("match_key").reset_index(drop=True)
    b = store.frame("digits-smoke").drop(columns=["updated"]).sort_values("match_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_the_published_suites_hold_every_built_in_strategy_at_its_defaults_and_three_seeds(name):
    """The leaderboard is the project's answer: a strategy added to arena and not to the suite
    would be missing from it without anyone deciding so."""
    from arena.registry import ATTACKERS, DEFENDERS
    from arena.suite import load_suite

    suite = load_suite(BOARDS / name / "suite.yaml")
    assert len(suite.seeds) == 3
    for registry, specs in ((ATTACKERS, suite.attackers), (DEFENDERS, suite.defenders)):
        builtins = {n for n in registry.names() if "/" not in n}
        at_defaults = {s.name for s in specs if s.param_dict == registry.create(s.name).spec_params}
        assert builtins <= at_defaults, sorted(builtins - at_defaults)


def test_pages_only_rewrites_the_pages_of_the_published_rows_and_names_what_the_suite_has_not_played(tmp_path, arena_home):
    import yaml

    from arena.cli import main

    folder = tmp_path / "digits-smoke"
    shutil.copytree(BOARDS / "digits-smoke", folder)
    suite = yaml.safe_load((folder / "suite.yaml").read_text())
    suite["attackers"].append("blended")
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite))
    before = json.loads((folder / "equilibrium.json").read_text())
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--pages-only", "--quiet"]) == 0
    assert (folder / "results.csv").read_text() == (BOARDS / "digits-smoke" / "results.csv").read_text()
    eq = json.loads((folder / "equilibrium.json").read_text())
    assert eq["value"] == pytest.approx(before["value"]) and eq["matrix"]["utility"] == before["matrix"]["utility"]
    assert eq["unplayed"] == {"attackers": ["blended"], "defenders": []}
    assert "1 attackers of the suite have no results yet (`blended`)" in eq["answer"][2]
    assert eq["answer"][3] == "**Since the last refresh.** This is the first refresh on record."  # its own entry is not an earlier answer
    assert eq["provenance"]["date"] == before["provenance"]["date"] and "rendered" in eq["provenance"]
    assert not (arena_home / "results.sqlite").exists() or ResultsStore(arena_home / "results.sqlite").frame("digits-smoke").empty  # nothing imported, nothing played
