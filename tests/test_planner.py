"""The tournament's planner (pure) and its scheduler on the in-process serial executor: no Ray."""

from __future__ import annotations

from arena.protocol import DefenseOutcome
from arena.registry import DEFENDERS
from arena.results import ResultsStore
from arena.strategy import Defender
from arena.suite import parse_suite
from arena.tournament import SerialExecutor, Status, plan, run_tournament

TINY = {"name": "tiny", "dataset": "digits", "epochs": 1, "seeds": [0, 1], "attackers": ["none", "badnets"], "defenders": ["none", {"name": "fine_tuning", "params": {"steps": 5}}]}


def test_the_plan_trains_each_attacked_model_once_baselines_first():
    suite = parse_suite(TINY, "tiny")
    work = plan(suite, finished=set())
    assert work.matches == 8 and len(work.todo) == 8 and work.skipped == 0
    # attackers x seeds; `none` doubles as the honest baseline of its seed
    assert [a.attacker.name for a in work.attacks] == ["none", "none", "badnets", "badnets"]
    honest_seed0 = work.attacks[0]
    assert {m.attack.attacker.name for m in work.dependents[honest_seed0.key]} == {"none", "badnets"}
    assert all(m.attack.seed == 0 for m in work.dependents[honest_seed0.key])


def test_the_plan_skips_finished_matches_and_their_models():
    suite = parse_suite(TINY, "tiny")
    finished = {m.key for m in suite.matches() if m.attack.attacker.name == "badnets" or m.attack.seed == 1}
    work = plan(suite, finished)
    assert work.skipped == 6 and {(m.attack.attacker.name, m.attack.seed) for m in work.todo} == {("none", 0)}
    assert [(a.attacker.name, a.seed) for a in work.attacks] == [("none", 0)]


class _Raises(Defender):
    """Fails on purpose."""

    name = "raises_on_purpose"
    version = "1"
    paper = "test double"

    def run(self, model, ctx) -> DefenseOutcome:
        raise RuntimeError("broken on purpose")


def test_a_serial_tournament_writes_every_match_and_isolates_a_failing_defense(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFENDERS._builtins, "raises_on_purpose", _Raises)
    suite = parse_suite({**TINY, "seeds": [0], "defenders": ["none", "raises_on_purpose"]}, "tiny")
    results = ResultsStore(tmp_path / "results.sqlite")
    summary = run_tournament(suite, results, executor=SerialExecutor(str(tmp_path / "home")))
    assert (summary.ok, summary.failed, summary.attacks_trained) == (2, 2, 2)
    frame = results.frame("tiny").set_index(["attacker", "defender"])
    assert frame.loc[("badnets", "none"), "status"] == Status.OK.value
    assert frame.loc[("badnets", "raises_on_purpose"), "status"] == Status.ERROR.value
    assert "broken on purpose" in frame.loc[("badnets", "raises_on_purpose"), "error"]
    again = run_tournament(suite, results, executor=SerialExecutor(str(tmp_path / "home")))
    assert again.skipped == 2 and again.ok == 0 and again.failed == 2  # failures are retried, successes kept


def test_a_kept_row_that_scored_another_model_of_its_attack_is_played_again(tmp_path, monkeypatch):
    # A published board's rows are kept by a refresh on another machine. One of them scored a
    # model that machine trained otherwise (its CPU kernels; here its hash is forged): once this
    # run trains its own model of that attack, the row is played again, so the board holds one
    # model per attack, the one this store holds.
    from arena.specs import MatchSpec
    from arena.store import ArtifactStore

    suite = parse_suite({**TINY, "seeds": [0]}, "tiny")
    first = tmp_path / "first"
    monkeypatch.setenv("ARENA_HOME", str(first))
    played = ResultsStore(first / "results.sqlite")
    run_tournament(suite, played, executor=SerialExecutor(str(first)))
    spec = {r["key"]: MatchSpec.from_dict(r["spec"]) for r in played.rows("tiny")}
    attacker = {key: s.attack.attacker.name for key, s in spec.items()}
    kept = next(r for r in played.rows("tiny") if attacker[r["key"]] == "badnets" and spec[r["key"]].defender.name == "none")
    foreign = {**kept, "result": {**kept["result"], "artifact_sha256": "f" * 64}}

    second = tmp_path / "second"
    monkeypatch.setenv("ARENA_HOME", str(second))
    results = ResultsStore(second / "results.sqlite")
    assert results.import_rows("tiny", [foreign]) == 1
    summary = run_tournament(suite, results, executor=SerialExecutor(str(second)))
    assert (summary.ok, summary.failed, summary.replayed) == (4, 0, 1)
    held = ArtifactStore(second).held_sha256(spec[kept["key"]].attack.key)
    shas = {r["key"]: r["result"]["artifact_sha256"] for r in results.rows("tiny") if attacker[r["key"]] == "badnets"}
    assert set(shas.values()) == {held} and kept["key"] in shas
    # training is deterministic: the model trained here is the first home's
    assert held == kept["result"]["artifact_sha256"]

    # the planner's side: a row whose model differs from the one held is not finished; one with no model held is
    assert results.finished("tiny", models=lambda key: None) == set(attacker)
    assert results.finished("tiny", models=lambda key: "0" * 64) == set()
    assert results.other_model_rows("tiny", lambda key: held if key == spec[kept["key"]].attack.key else None) == set()
