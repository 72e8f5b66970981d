"""Tournaments on Ray (started once for this module): reuse, resume, failure isolation."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ray_with_plugins

from arena.match import prepare, run_match
from arena.results import ResultsStore
from arena.store import ArtifactStore
from arena.suite import parse_suite
from arena.tournament import run_tournament

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "epochs": 3,
    "seeds": [0],
    "attackers": ["none", "badnets", "pruning_aware"],
    "defenders": ["none", {"name": "fine_tuning", "params": {"steps": 10}}],
}


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    with ray_with_plugins(tmp_path_factory.mktemp("tournament-home")) as home:
        yield home


@pytest.fixture(scope="module")
def tiny_run(ray_session):
    results = ResultsStore(ray_session / "results.sqlite")
    summary = run_tournament(parse_suite(TINY, "tiny"), results)
    return results, summary


def _metrics(frame):
    cols = ["match_key", "status", "attacked_ca", "attacked_asr", "defended_ca", "defended_asr", "utility", "artifact_sha256"]
    return frame[cols].sort_values("match_key").reset_index(drop=True)


def test_every_match_is_a_row_and_each_attacked_model_is_trained_once(ray_session, tiny_run):
    results, summary = tiny_run
    assert summary.ok == 6 and summary.failed == 0
    assert summary.attacks_trained == 3  # attackers x seeds; `none` doubles as the honest baseline
    assert len(list((ray_session / "models").glob("*.json"))) == 3
    frame = results.frame("tiny")
    assert len(frame) == 6 and set(frame.status) == {"ok"}
    assert frame.arena_version.notna().all() and frame.artifact_sha256.notna().all()


def test_a_tournament_cell_equals_the_same_match_run_alone(ray_session, tiny_run):
    results, _ = tiny_run
    frame = results.frame("tiny")
    cell = frame[(frame.attacker == "badnets") & (frame.defender == "fine_tuning")].iloc[0]
    alone = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 10}, epochs=3), ArtifactStore(ray_session)).to_json()
    assert alone["cached"]
    assert cell.defended_asr == alone["defended"]["asr"] and cell.defended_ca == alone["defended"]["ca"]


def test_a_tournament_worker_and_a_match_on_more_threads_train_the_same_bits(ray_session, tiny_run, tmp_path):
    import torch

    results, _ = tiny_run
    frame = results.frame("tiny")
    cell = frame[(frame.attacker == "badnets") & (frame.defender == "fine_tuning")].iloc[0]
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's setting must not matter: stages pin their own
    try:
        alone = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 10}, epochs=3), ArtifactStore(tmp_path)).to_json()
    finally:
        torch.set_num_threads(before)
    assert not alone["cached"] and alone["artifact_sha256"] == cell.artifact_sha256
    assert alone["utility"] == cell.utility and json.loads(cell.numerics) == alone["numerics"]


def test_resume_runs_only_the_missing_cells_and_ends_with_the_same_table(ray_session, tiny_run):
    results, _ = tiny_run
    before = _metrics(results.frame("tiny"))
    gone = before.match_key[:2].tolist()
    results.db.executemany("DELETE FROM matches WHERE suite = 'tiny' AND key = ?", [(k,) for k in gone])
    summary = run_tournament(parse_suite(TINY, "tiny"), results)
    assert summary.skipped == 4 and summary.ok == 2 and summary.attacks_trained == 0
    assert _metrics(results.frame("tiny")).equals(before)
    again = run_tournament(parse_suite(TINY, "tiny"), results)
    assert again.skipped == 6 and again.done == 0


def test_a_failing_hanging_or_garbage_defense_fails_only_its_own_cells(ray_session):
    suite = parse_suite(
        {
            **TINY,
            "name": "faulty",
            "attackers": ["badnets"],
            "defenders": ["none", "arena_faulty/raises", "arena_faulty/hangs", "arena_faulty/garbage"],
            "limits": {"defense_timeout_s": 8, "retries": 0},
        },
        "faulty",
    )
    results = ResultsStore(ray_session / "results.sqlite")
    summary = run_tournament(suite, results)
    frame = results.frame("faulty").set_index("defender")
    assert summary.ok == 1 and summary.failed == 3
    assert frame.loc["none", "status"] == "ok"
    assert frame.loc["arena_faulty/raises", "status"] == "error" and "broken on purpose" in frame.loc["arena_faulty/raises", "error"]
    assert frame.loc["arena_faulty/hangs", "status"] == "timeout"
    assert frame.loc["arena_faulty/garbage", "status"] == "error" and "not a DefenseOutcome" in frame.loc["arena_faulty/garbage", "error"]


def test_gpu_shares_on_a_cluster_without_gpus_are_one_clear_error_before_anything_runs(ray_session, tmp_path, capsys):
    import ray

    from arena.cli import main

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray cluster has GPUs")
    folder = tmp_path / "gpu-suite"
    folder.mkdir()
    (folder / "suite.yaml").write_text(json.dumps({**TINY, "name": "gpu", "attackers": ["badnets"], "defenders": ["none"]}))
    assert main(["tournament", str(folder), "--quiet", "--gpus-per-task", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "the Ray cluster has none" in err and "Traceback" not in err
    (folder / "suite.yaml").write_text(json.dumps({**TINY, "name": "gpu", "attackers": ["badnets"], "defenders": ["none"], "gpus_per_task": 0.5}))
    assert main(["tournament", str(folder), "--quiet"]) == 2  # the suite's own share, likewise
    assert main(["tournament", str(folder), "--quiet", "--gpus-per-task", "0", "--device", "cuda"]) == 2
    assert "needs GPUs for its workers" in capsys.readouterr().err
    assert main(["results", "gpu"]) == 2  # nothing ran, no row was written


def test_cli_tournament_and_results_export(ray_session, tmp_path, capsys):
    from arena.cli import main

    folder = tmp_path / "cli-suite"
    folder.mkdir()
    (folder / "suite.yaml").write_text(json.dumps({**TINY, "name": "cli", "attackers": ["badnets"], "defenders": ["none"]}))
    assert main(["tournament", str(folder), "--quiet", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert main(["results", "cli", "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.startswith("suite,match_key,attacker") and "badnets" in csv
    out = tmp_path / "r.parquet"
    assert main(["results", str(folder), "--format", "parquet", "--output", str(out)]) == 0 and out.stat().st_size > 0
    assert main(["results", "no-such-suite"]) == 2
    assert "no results" in capsys.readouterr().err


def test_leaderboard_refresh_runs_missing_cells_and_publishes(ray_session, tmp_path, capsys):
    from arena.cli import main

    folder = tmp_path / "board"
    folder.mkdir()
    suite = {**TINY, "name": "board", "attackers": ["badnets", "pruning_aware"], "defenders": ["none", {"name": "fine_tuning", "params": {"steps": 10}}]}
    (folder / "suite.yaml").write_text(json.dumps(suite))
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "game value" in out
    eq = json.loads((folder / "equilibrium.json").read_text())
    assert set(eq["defender"]) == {"none", "fine_tuning(steps=10)"} and eq["exploitability"] < 1e-6
    for name in ("results.csv", "README.md", "index.html", "utility.png"):
        assert (folder / name).exists()
    # a new strategy named on the command line is played against every opponent, the rest reused
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet", "--with", "pruning"]) == 0
    assert "pruning" in json.loads((folder / "equilibrium.json").read_text())["defender"]
    assert main(["leaderboard", "show", str(folder / "suite.yaml")]) == 0
    assert "fine_tuning(steps=10)" in capsys.readouterr().out


def test_a_refresh_on_a_fresh_machine_starts_from_the_published_rows(ray_session, tmp_path, capsys, monkeypatch):
    """The published results.csv is the starting state: with nothing new nothing is played and
    the published files stay as they were; a new defender plays only its own cells, re-training
    the attacked models those need, to the very models the published rows were computed on."""
    from arena.cli import main

    folder = tmp_path / "board"
    folder.mkdir()
    suite = {**TINY, "name": "fresh", "attackers": ["badnets"], "defenders": ["none", {"name": "fine_tuning", "params": {"steps": 10}}]}
    (folder / "suite.yaml").write_text(json.dumps(suite))
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet"]) == 0
    published = (folder / "results.csv").read_text()
    capsys.readouterr()
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "another-machine"))  # an empty store: no rows, no models
    assert main(["leaderboard", "show", str(folder / "suite.yaml")]) == 0
    assert "the published board of" in " ".join(capsys.readouterr().err.split())
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"started from the {published.count(chr(10)) - 1} published rows" in err and "ran 0 matches" in err and "attacked models trained 0" in err
    assert (folder / "results.csv").read_text() == published
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet", "--with", "pruning"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "ran 1 matches (1 ok" in err and "skipped 2 already done" in err and "attacked models trained 2" in err, err  # badnets' model and the honest one, once each
    rows = pd.read_csv(folder / "results.csv")
    for (attacker, seed), group in rows.groupby(["attacker", "seed"]):
        assert group.artifact_sha256.nunique() == 1, (attacker, seed)  # re-trained to the published model, bit for bit


def test_a_submitted_defense_plays_every_opponent_from_its_isolated_install(ray_session, tmp_path, capsys):
    """The maintainer's side of `arena submit`: the bundle's wheel, installed in a folder of its
    own, plays in the tournament's workers (sandboxed) and its rows are published with its hash."""
    from arena.cli import main
    from arena.registry import plugin_paths
    from arena.submission import build_bundle

    example = Path(__file__).parents[1] / "examples" / "arena-squeeze-defense"
    bundle, manifest = build_bundle(example, tmp_path / "squeeze.arena-submission.zip", time_budget_s=120)
    folder = tmp_path / "board"
    folder.mkdir()
    (folder / "suite.yaml").write_text(json.dumps({**TINY, "name": "submitted", "attackers": ["none", "badnets"], "defenders": ["none"]}))
    assert main(["leaderboard", "refresh", str(folder / "suite.yaml"), "--quiet", "--submission", str(bundle)]) == 0
    assert "passes every check here" in " ".join(capsys.readouterr().err.split())
    assert plugin_paths() == ()  # the isolated folder left the path with the command
    rows = pd.read_csv(folder / "results.csv")
    played = rows[rows.defender == "arena_squeeze/squeeze_inputs"]
    assert len(played) == 2 and (played.status == "ok").all()  # against both attackers
    eq = json.loads((folder / "equilibrium.json").read_text())
    assert eq["strategies"]["defenders"]["arena_squeeze/squeeze_inputs"]["submission"]["sha256"] == manifest["sha256"]
    assert json.loads((folder / "submissions.json").read_text())["arena_squeeze/squeeze_inputs"]["sha256"] == manifest["sha256"]
    assert manifest["sha256"] in (folder / "README.md").read_text() and manifest["sha256"] in (folder / "index.html").read_text()


def test_a_plugin_trigger_kind_architecture_and_dataset_play_in_tournament_workers(ray_session):
    """tests/fixture_plugins/arena_extras: one of each extension point, by entry points alone.
    The attack worker trains on the plugin dataset and architecture with the plugin trigger; the
    defense workers rebuild the model and trigger from the manifest's recorded origins. The
    plugin architecture has no conv layer, so pruning is an n/a cell, decided at validation."""
    suite = parse_suite(
        {
            "name": "extras",
            "dataset": "digits_negative",
            "architecture": "tiny_mlp",
            "seeds": [0],
            "attackers": ["none", "arena_extras/striped"],
            "defenders": ["none", "pruning", {"name": "fine_tuning", "params": {"steps": 10}}],
        },
        "extras",
    )
    assert {(a.name, d.name) for a, d in suite.not_applicable} == {("none", "pruning"), ("arena_extras/striped", "pruning")}
    assert "Prunable" in next(iter(suite.not_applicable.values()))
    results = ResultsStore(ray_session / "results.sqlite")
    summary = run_tournament(suite, results)
    frame = results.frame("extras")
    assert summary.failed == 0 and set(frame.status) == {"ok"} and len(frame) == 6
    pruning = frame[frame.defender == "pruning"]
    assert set(pruning.deployed) == {"n/a"} and pruning.not_applicable.str.contains("Prunable").all()
    assert frame[frame.defender != "pruning"].not_applicable.isna().all()
    striped = frame[(frame.attacker == "arena_extras/striped") & (frame.defender == "none")].iloc[0]
    honest = frame[(frame.attacker == "none") & (frame.defender == "none")].iloc[0]
    assert striped.attacked_asr > 0.8 > 0.3 > honest.attacked_asr  # the plugin trigger carries a backdoor
    manifest = json.loads((ray_session / "models" / f"{suite.attack_specs()[1].key}.json").read_text())
    origins = {(o["registry"], o["name"]): (o["module"], o["distribution"]) for o in manifest["origins"]}
    assert origins == {("trigger kind", "stripes"): ("arena_extras", "arena_extras"), ("architecture", "tiny_mlp"): ("arena_extras", "arena_extras")}


def test_an_attacker_that_cannot_train_the_suite_architecture_is_refused_at_validation(ray_session):
    from arena.suite import SuiteError

    with pytest.raises(SuiteError, match="pruning_aware.*Prunable.*tiny_mlp"):
        parse_suite({"dataset": "digits", "architecture": "tiny_mlp", "seeds": [0], "attackers": ["pruning_aware"], "defenders": ["none"]}, "bad")
