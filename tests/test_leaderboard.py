"""Leaderboards: the board of a results frame, the published files, and the HTML in a browser."""

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from arena.leaderboard import build_board, publish


def _frame(utilities, stealthy=None, statuses=None):
    """Results rows for a grid given as {(defender, attacker): [utility per seed]}."""
    rows = []
    for (d, a), values in utilities.items():
        for seed, u in enumerate(values):
            status = (statuses or {}).get((d, a, seed), "ok")
            rows.append(
                {
                    "suite": "t", "match_key": f"{d}-{a}-{seed}", "attacker": a, "attacker_version": "1", "attacker_params": "{}",
                    "defender": d, "defender_version": "1", "defender_params": "{}", "dataset": "digits", "seed": seed,
                    "status": status, "honest_ca": 0.9, "attacked_ca": 0.9, "attacked_asr": 1.0,
                    "defended_ca": 0.9 if status == "ok" else None, "defended_asr": (0.9 - u) if status == "ok" else None,
                    "utility": u if status == "ok" else None, "stealthy": (stealthy or {}).get(a, True), "verdict_flagged": None,
                    "seconds_attack": 1.0, "seconds_defense": 1.0, "clean_samples": 60, "artifact_sha256": "x", "arena_version": "0",
                    "git_commit": None, "error": None if status == "ok" else "boom", "attempts": 1, "updated": "now",
                }
            )
    return pd.DataFrame(rows)


TALK = {
    ("fine_tuning", "badnets"): [0.555, 0.555],
    ("fine_tuning", "pruning_aware"): [0.468, 0.468],
    ("fine_pruning", "badnets"): [0.968, 0.968],
    ("fine_pruning", "pruning_aware"): [0.986, 0.986],
}


def test_board_of_the_talk_table():
    board = build_board(_frame(TALK), "t", replicates=20)
    assert board.solution.value == pytest.approx(0.968)
    i = board.defenders.index("fine_pruning")
    assert board.solution.defender[i] == pytest.approx(1.0, abs=1e-6)
    assert board.scores["defender_nash_rank"][i] == 1


def test_non_stealthy_attacks_and_failed_cells_are_left_out_with_a_reason():
    grid = {**TALK, ("broken", "badnets"): [0.1, 0.1], ("broken", "pruning_aware"): [0.1, 0.1], ("fine_tuning", "loud"): [0.0, 0.0], ("fine_pruning", "loud"): [0.0, 0.0], ("broken", "loud"): [0.0, 0.0]}
    frame = _frame(grid, stealthy={"loud": False}, statuses={("broken", "badnets", 1): "timeout"})
    board = build_board(frame, "t", replicates=10)
    assert "loud" in board.excluded and "stealthy" in board.excluded["loud"]
    assert "broken" in board.excluded and "timeout" in board.excluded["broken"]
    assert board.defenders == ["fine_pruning", "fine_tuning"] and board.attackers == ["badnets", "pruning_aware"]
    kept = build_board(frame, "t", include_nonstealthy=True, replicates=10)
    assert "loud" in kept.attackers


def test_an_incomplete_matrix_is_never_filled():
    grid = dict(TALK)
    del grid[("fine_tuning", "pruning_aware")]
    board = build_board(_frame(grid), "t", replicates=10)
    assert "pruning_aware" in board.excluded and "incomplete" in board.excluded["pruning_aware"]
    assert board.attackers == ["badnets"] and not np.isnan(board.matrix).any()


@pytest.fixture
def published(tmp_path):
    frame = _frame({k: [v[0], v[0] - 0.02] for k, v in TALK.items()})
    board = build_board(frame, "t", replicates=20)
    eq = publish(board, frame, tmp_path / "t")
    return tmp_path / "t", eq


def test_publish_writes_every_file_and_the_json_matches_the_board(published):
    folder, eq = published
    for name in ("results.csv", "equilibrium.json", "README.md", "index.html", "utility.png", "ca.png", "asr.png"):
        assert (folder / name).stat().st_size > 0, name
    on_disk = json.loads((folder / "equilibrium.json").read_text())
    assert on_disk["value"] == pytest.approx(eq["value"]) and set(on_disk["defender"]) == {"fine_pruning", "fine_tuning"}
    assert {"arena_version", "git_commit", "strategy_versions", "date"} <= set(on_disk["provenance"])
    assert "fine_pruning" in (folder / "README.md").read_text()
    assert len(pd.read_csv(folder / "results.csv")) == 8


def _browser():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium here (.ci/run installs it)")
def test_the_html_page_renders_in_a_headless_browser_with_the_numbers_of_the_json(published, tmp_path):
    folder, eq = published
    proc = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", (folder / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = proc.stdout
    assert "<table id=\"defender-ranking\">" in dom or "id=\"defender-ranking\"" in dom, proc.stderr[-500:]
    value = re.search(r"<span id=\"value\">([-0-9.]+)</span>", dom)
    assert value and float(value.group(1)) == pytest.approx(eq["value"], abs=1e-4)
    cells = [float(x) for x in re.findall(r"<td>([-0-9.]+)</td>", dom.split("id=\"utility-matrix\"")[1].split("</table>")[0])]
    assert cells == pytest.approx([v for row in eq["matrix"]["utility"] for v in row], abs=1e-4)


def test_the_board_shows_detection_per_verdict_giving_defender_and_mixed_numerics(tmp_path):
    frame = _frame({("nc", "none"): [0.9, 0.9], ("nc", "badnets"): [0.5, 0.6], ("fine_tuning", "none"): [0.9, 0.9], ("fine_tuning", "badnets"): [0.1, 0.1]})
    verdicts = {("nc", "none", 0): (False, 1.0, []), ("nc", "none", 1): (True, 2.5, [4]), ("nc", "badnets", 0): (True, 4.0, [0]), ("nc", "badnets", 1): (True, 3.0, [7])}
    for column in ("verdict_score", "verdict_labels", "targets", "numerics"):
        frame[column] = None
    cpu = json.dumps({"torch": "2.13.0+cpu", "device": "cpu", "threads": 1, "cpu_kernels": "AVX2", "machine": "x86_64"})
    for i, row in frame.iterrows():
        flagged, score, labels = verdicts.get((row.defender, row.attacker, row.seed), (None, None, None))
        frame.loc[i, ["verdict_flagged", "verdict_score", "verdict_labels"]] = [flagged, score, None if labels is None else json.dumps(labels)]
        frame.loc[i, "targets"] = json.dumps([0] if row.attacker == "badnets" else [])
        frame.loc[i, "numerics"] = cpu if row.seed == 0 else cpu.replace("AVX2", "AVX512")
    board = build_board(frame, "t", replicates=10)
    # only `nc` gave verdicts: 2 backdoored models both flagged (one with the right label), 1 of 2 honest flagged
    assert set(board.detection) == {"nc"}
    assert board.detection["nc"] == {"backdoored": 2, "honest": 2, "tpr": 1.0, "fpr": 0.5, "auroc": 1.0, "target_hit": 0.5}
    assert len(board.numerics) == 2 and sum(board.numerics.values()) == 8
    eq = publish(board, frame, tmp_path / "t")
    page = (tmp_path / "t" / "README.md").read_text()
    assert "## Detection" in page and "| `nc` | 2 | 2 | 1.000 | 0.500 | 1.000 | 0.500 |" in page
    assert "Mixed numerics" in page and eq["detection"]["nc"]["tpr"] == 1.0
    assert "id='detection'" in (tmp_path / "t" / "index.html").read_text()


def test_an_n_a_cell_stays_in_the_game_and_is_marked_on_every_page(tmp_path):
    frame = _frame(TALK)
    frame["not_applicable"] = None
    na = (frame.defender == "fine_pruning") & (frame.attacker == "pruning_aware")
    frame.loc[na, "not_applicable"] = "defender 'fine_pruning' needs a model that is Prunable; X is not"
    board = build_board(frame, "t", replicates=20)
    assert board.defenders == ["fine_pruning", "fine_tuning"] and board.attackers == ["badnets", "pruning_aware"]  # nothing dropped
    assert board.not_applicable == {("fine_pruning", "pruning_aware"): "defender 'fine_pruning' needs a model that is Prunable; X is not"}
    eq = publish(board, frame, tmp_path / "board")
    assert eq["matrix"]["not_applicable"] == [[False, True], [False, False]]
    assert list(eq["not_applicable"]) == ["pruning_aware vs fine_pruning"]
    readme = (tmp_path / "board" / "README.md").read_text()
    assert "| `fine_pruning` | 0.968 ± 0.000 | n/a, 0.986 ± 0.000 |" in readme and "Prunable" in readme
    assert "n/a, 0.9860" in (tmp_path / "board" / "index.html").read_text()
    assert "- `fine_pruning` against pruning_aware: defender 'fine_pruning' needs a model that is Prunable; X is not" in readme
    assert "1 n/a cells (`fine_pruning` against 1 of 2 attackers:" in readme
    # a defense that can act on no model of the board is said once, not once per attacker
    frame.loc[frame.defender == "fine_pruning", "not_applicable"] = "defender 'fine_pruning' needs a model that is Prunable; X is not"
    publish(build_board(frame, "t", replicates=20), frame, tmp_path / "every")
    readme = (tmp_path / "every" / "README.md").read_text()
    assert readme.count("needs a model that is Prunable") == 1
    assert "- `fine_pruning` against every attacker in the game (2): defender 'fine_pruning' needs" in readme
    assert "2 n/a cells (`fine_pruning` against every attacker:" in readme
    html = (tmp_path / "every" / "index.html").read_text()
    assert html.count("needs a model that is Prunable") == 1 and "fine_pruning against every attacker in the game (2)" in html
    frame.loc[frame.defender == "fine_tuning", "not_applicable"] = "defender 'fine_tuning' needs a model that is Prunable; X is not"
    publish(build_board(frame, "t", replicates=20), frame, tmp_path / "both")
    assert "4 n/a cells (`fine_pruning` and `fine_tuning` against every attacker:" in (tmp_path / "both" / "README.md").read_text()
    frame.loc[frame.defender == "fine_tuning", "not_applicable"] = None
    frame.loc[frame.defender == "fine_pruning", "not_applicable"] = None
    frame.loc[na, "not_applicable"] = "defender 'fine_pruning' needs a model that is Prunable; X is not"
    # a cell with one seed n/a and one defended is not n/a
    frame.loc[na & (frame.seed == 1), "not_applicable"] = None
    assert build_board(frame, "t", replicates=20).not_applicable == {}
