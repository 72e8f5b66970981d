"""`arena leaderboard verify`: published cells re-played from an empty store."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from arena.cli import main
from arena.leaderboard import build_board, publish
from arena.match import prepare, run_match
from arena.results import ResultsStore
from arena.store import ArtifactStore
from arena.suite import load_suite

SUITE = {"name": "verify-me", "dataset": "digits", "epochs": 3, "seeds": [0], "attackers": ["badnets"], "defenders": [{"name": "fine_tuning", "params": {"steps": 5}}]}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A one-cell suite, played and published the way `leaderboard refresh` publishes it."""
    root = tmp_path_factory.mktemp("verify")
    folder = root / "verify-me"
    folder.mkdir()
    (folder / "suite.yaml").write_text(json.dumps(SUITE))
    suite = load_suite(folder)
    results = ResultsStore(root / "results.sqlite")
    for spec in suite.matches():
        prepared = prepare(spec.attack.attacker.name, spec.defender.name, attacker_params=spec.attack.attacker.param_dict,
                           defender_params=spec.defender.param_dict, dataset="digits", epochs=3)
        assert prepared.spec == spec
        results.put(suite.name, spec, "ok", result=run_match(prepared, ArtifactStore(root / "home")).to_json())
    frame = results.frame(suite.name)
    publish(build_board(frame, suite.name, replicates=10), frame, folder)
    return folder


def _rewrite(folder, tmp_path, **changes):
    """A copy of the published suite whose one row has `changes`."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "suite.yaml").write_text((folder / "suite.yaml").read_text())
    frame = pd.read_csv(folder / "results.csv")
    for column, value in changes.items():
        frame[column] = value
    frame.to_csv(copy / "results.csv", index=False)
    return copy / "suite.yaml"


def test_a_published_cell_reproduces_bit_for_bit(published, capsys):
    assert main(["leaderboard", "verify", str(published / "suite.yaml"), "--cells", "1", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    check = report["checks"][0]
    assert report["reproduced"] == 1 and check["reproduces"] and check["numerics_differ"] == []
    assert check["reproduced"]["artifact_sha256"] == check["published"]["artifact_sha256"]
    assert check["reproduced"]["utility"] == check["published"]["utility"]


def test_a_published_number_that_does_not_reproduce_fails_the_verification(published, tmp_path, capsys):
    published_utility = pd.read_csv(published / "results.csv").utility.iloc[0]
    path = _rewrite(published, tmp_path, utility=published_utility + 0.001)
    assert main(["leaderboard", "verify", str(path), "--cells", "1", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "0 of 1 cells reproduce" in out


def test_other_numerics_are_named_and_judged_within_the_tolerance(published, tmp_path, capsys):
    numerics = json.loads(pd.read_csv(published / "results.csv").numerics.iloc[0])
    path = _rewrite(published, tmp_path, numerics=json.dumps({**numerics, "torch": "9.9.9"}))
    assert main(["leaderboard", "verify", str(path), "--cells", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "torch: 9.9.9 vs" in out and "within tolerance" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-suite"], "no suite 'no-such-suite'"),
        (["{empty}"], "has no published results"),
        (["{published}", "--cells", "2"], "more than the 1 published cells"),
        (["{published}", "--cells", "0"], "at least 1"),
        (["{columnless}"], "lacks the columns"),
    ],
)
def test_bad_verify_input_is_one_clear_error_with_exit_code_2(published, tmp_path, capsys, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "suite.yaml").write_text((published / "suite.yaml").read_text())
    columnless = tmp_path / "columnless"
    columnless.mkdir()
    (columnless / "suite.yaml").write_text((published / "suite.yaml").read_text())
    pd.read_csv(published / "results.csv").drop(columns=["attacker_params"]).to_csv(columnless / "results.csv", index=False)
    argv = [a.format(empty=empty / "suite.yaml", published=published / "suite.yaml", columnless=columnless / "suite.yaml") for a in argv]
    assert main(["leaderboard", "verify", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
