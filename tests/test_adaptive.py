"""`arena oracle` on real matches (Ray started once for this module): positive controls on both
sides (a planted hole the search must find, Zimmermann et al. NeurIPS 2022) and bad input."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import ray_with_plugins

from arena.adaptive import OracleError, parse_search, play_oracle
from arena.cli import main
from arena.results import ResultsStore
from arena.suite import parse_suite

POSITIONS = ["bottom_right", "bottom_left", "top_right", "top_left"]


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory):
    with ray_with_plugins(tmp_path_factory.mktemp("oracle-home")) as home:
        yield home


def _suite(tmp_path, data):
    folder = tmp_path / data["name"]
    folder.mkdir()
    (folder / "suite.yaml").write_text(yaml.safe_dump(data))
    return str(folder)


# 16 epochs: at 8, digits models are under-trained (honest CA 0.91) and whether a badnet lands
# within the stealth tolerance depends on the draw (one draw put the top-left one 3.9 points
# below), which would turn the planted hole into a failed attack for reasons not the control's
BASE = {"dataset": "digits", "epochs": 16, "seeds": [0]}


def test_the_attacker_search_finds_the_corner_the_defense_does_not_watch(ray_home, tmp_path, capsys):
    suite = _suite(
        tmp_path,
        {
            **BASE,
            "name": "control-attacker",
            "attackers": ["badnets"],
            "defenders": ["none", "arena_controls/corner_filter"],  # watches every corner but the top left
            "search": {"attackers": {"badnets": {"trigger_position": {"choices": POSITIONS}}}},
        },
    )
    assert main(["oracle", suite, "--json", "--quiet", "--iterations", "2", "--trials", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    first = out["iterations"][0]
    assert "trigger_position=top_left" in first["best_attacker"] and first["attacker_gain"] > 0.5  # the hole, found
    assert any("trigger_position=top_left" in added for added in first["added"])
    hole = sum(p for label, p in out["attacker"].items() if "trigger_position=top_left" in label)
    assert hole > 0.99  # the equilibrium moved onto it
    assert out["value"] < first["value"] - 0.5
    assert Path(out["plot"]).stat().st_size > 0 and out["trials"] >= 12
    assert out["resumed_searches"] == 0 and out["tune_overhead"] is not None

    # the adapted game, recorded for the leaderboard: the corner filter's worst case falls
    game = json.loads(Path(out["game"]).read_text())
    assert game["attacker_adapted_value"] < game["static_value"] - 0.5
    (corner,) = [w for w in game["worst_case"] if w["defender"] == "arena_controls/corner_filter"]
    assert corner["fall"] > 0.5 and "trigger_position=top_left" in corner["worst_attacker"]
    assert any(a["adapted"] and a["params"]["trigger_position"] == "top_left" for a in game["attackers"])
    assert game["searched"] == {"attackers": ["badnets"], "defenders": []}

    # run again, as after an interruption: every search is read back, nothing is searched anew
    assert main(["oracle", suite, "--json", "--quiet", "--iterations", "2", "--trials", "12"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_searches"] == len(again["iterations"]) and again["value"] == out["value"]
    assert again["attacker"] == out["attacker"] and again["trials"] == out["trials"]

    # the refresh publishes the adapted game beside the static one
    assert main(["leaderboard", "refresh", suite, "--quiet"]) == 0
    capsys.readouterr()
    page = (Path(suite) / "README.md").read_text()
    assert "## The adapted game" in page and "trigger_position=top_left" in page
    assert "(`badnets` searched by `arena oracle`)" in page and "the defenders were not searched" in page
    assert json.loads((Path(suite) / "adapted.json").read_text())["value"] == pytest.approx(out["value"])
    assert "id='adapted-worst-case'" in (Path(suite) / "index.html").read_text()


def test_the_defender_search_finds_the_corner_the_attack_uses(ray_home, tmp_path):
    data = {
        **BASE,
        "name": "control-defender",
        "attackers": [{"name": "badnets", "params": {"trigger_position": "top_left"}}],
        "defenders": ["none", {"name": "arena_controls/corner_filter", "params": {"corner": "bottom_right"}}],
        "search": {"defenders": {"arena_controls/corner_filter": {"corner": {"choices": ["top_left", "top_right", "bottom_left", "bottom_right", "all_but_top_left"]}}}},
    }
    suite = parse_suite(data, "control-defender")
    report = play_oracle(suite, ResultsStore(ray_home / "results.sqlite"), iterations=2, trials=10, storage=tmp_path / "tune")
    first = report.rounds[0]
    assert "corner=top_left" in first["best_defender"] and first["defender_gain"] > 0.5
    final = dict(zip(report.result.defenders, report.result.solution.defender))
    assert sum(p for d, p in final.items() if d.param_dict.get("corner") == "top_left") > 0.99
    assert report.result.solution.value > first["value"] + 0.5


def test_cells_the_suite_already_played_are_taken_from_its_rows_not_played_again(ray_home):
    from arena.adaptive import MatchGame, cell_utility
    from arena.tournament import run_tournament

    suite = parse_suite({**BASE, "epochs": 2, "name": "reuse", "attackers": ["badnets"], "defenders": ["none"]}, "reuse")
    results = ResultsStore(ray_home / "results.sqlite")
    run_tournament(suite, results)
    game = MatchGame(suite, results)
    value = game.utility(suite.defenders[0], suite.attackers[0])
    (theirs,), (ours,) = results.rows("reuse"), results.rows("reuse+oracle")
    assert ours["result"] == theirs["result"]  # the same row, timings included: nothing was re-run
    assert value == pytest.approx(cell_utility(theirs["result"]))


def test_a_non_stealthy_attack_is_a_failed_attack_not_a_win():
    from arena.adaptive import cell_utility

    ruined = {"utility": 0.05 - 0.0, "stealthy": False, "honest": {"ca": 0.95}, "defended": {"ca": 0.05}}
    assert cell_utility(ruined) == 0.95  # ruining the model earns the attacker nothing
    assert cell_utility({**ruined, "stealthy": True, "utility": -0.5}) == -0.5


BAD = [
    ({}, "must be `declared`"),
    ("everything", "must be `declared`"),
    ({"defenders": ["none"]}, "declares no search ranges"),
    ({"attackers": {"badnets": "wide"}}, "has nothing to search"),
    ({"attackers": {"pruning_aware": {"poison_rate": [0.01, 0.2]}}}, "not among the suite's attackers"),
    ({"attackers": {"badnets": {}}}, "has nothing to search"),
    ({"attackers": {"badnets": {"poison_rat": [0.01, 0.2]}}}, "Did you mean 'poison_rate'"),
    ({"attackers": {"badnets": {"poison_rate": [0.2, 0.2]}}}, "a one-point space"),
    ({"attackers": {"badnets": {"poison_rate": [0.01, 7.0]}}}, "poison_rate"),
    ({"attackers": {"badnets": {"trigger_position": [1, 2]}}}, "search it with {choices"),
    ({"attackers": {"badnets": {"poison_rate": "wide"}}}, "a range is written [low, high]"),
    ({"defenders": {"none": {"x": [0, 1]}}}, "Unknown hyperparameter 'x'"),
]


def test_strategies_declare_their_search_ranges_and_a_suite_may_replace_them():
    base = {**BASE, "name": "d", "attackers": ["none", "badnets", {"name": "badnets", "params": {"poison_rate": 0.2}}], "defenders": ["none", "fine_pruning"]}
    # no block: every family but the baselines, over the ranges its strategy declares
    attackers, defenders = parse_search(None, parse_suite(base, "d"))
    assert [f.name for f in attackers] == ["badnets"] and [f.name for f in defenders] == ["fine_pruning"]
    recipe = attackers[0].ranges
    assert recipe["optimizer"] == {"choices": ["adam", "sgd", "adadelta"]} and recipe["preprocessing"] == {"choices": ["unit", "standardize"]}
    assert recipe["lr"][2] == "log" and set(recipe) >= {"batch_size", "init_scale", "poison_rate", "trigger_size", "trigger_position", "trigger_pattern", "target"}
    assert set(defenders[0].ranges) >= {"lr", "steps", "max_accuracy_drop"}
    # a name alone means the same; explicit ranges replace the declared ones
    listed = parse_search({"attackers": ["badnets"], "defenders": {"fine_pruning": {"lr": [0.001, 0.01, "log"]}}}, parse_suite(base, "d"))
    assert listed[0][0].ranges == recipe and listed[1][0].ranges == {"lr": [0.001, 0.01, "log"]}
    # every declared range lies inside its parameter's own space, and Tune can represent it
    for family in attackers + defenders:
        family.domains()
        family.spec({k: (v["choices"][-1] if isinstance(v, dict) else v[1]) for k, v in family.ranges.items()})


@pytest.mark.parametrize("search, message", BAD)
def test_a_bad_search_block_is_refused_by_name_before_any_work(search, message):
    suite = parse_suite({**BASE, "name": "bad", "attackers": ["badnets"], "defenders": ["none"], "search": search}, "bad")
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("{", r"\{").replace("(", r"\(")):
        parse_search(suite.search, suite)


@pytest.mark.parametrize("kwargs, message", [({"iterations": 0}, "--iterations"), ({"trials": 0}, "--trials"), ({"search_alg": "bohb"}, "unknown search algorithm"), ({"time_budget": 0}, "--time")])
def test_a_bad_budget_is_refused_before_any_match(kwargs, message, tmp_path):
    suite = parse_suite({**BASE, "name": "b", "attackers": ["badnets"], "defenders": ["none"], "search": {"attackers": {"badnets": {"poison_rate": [0.01, 0.2]}}}}, "b")
    played = []
    budget = {"iterations": 1, "trials": 1, **kwargs}
    with pytest.raises(OracleError, match=message):
        play_oracle(suite, ResultsStore(tmp_path / "r.sqlite"), storage=tmp_path, play=played.append, **budget)
    assert not played


def _game(**changes):
    worst = [{"defender": "strip", "adapted": False, "worst_static": 0.2, "worst_adapted": -0.1, "fall": 0.3, "worst_attacker": "badnets(target=3)"},
             {"defender": "none", "adapted": False, "worst_static": -0.5, "worst_adapted": -0.5, "fall": 0.0, "worst_attacker": "badnets"}]
    game = {"static_value": 0.4, "attacker_adapted_value": 0.1, "value": 0.1, "exploitability": 0.0, "converged": False, "stopped_by": "time",
            "exploitability_note": "an empirical bound", "searched": {"attackers": ["badnets"], "defenders": []}, "defenders": [], "attackers": [],
            "worst_case": worst, "iterations": [{"defender_gain": 0.0, "attacker_gain": 0.0, "skipped_searches": 1}],
            "cost": {"trials": 3, "failed_trials": 0, "stopped_trials": 1, "trial_seconds": 10.0}, "cells": "store"}
    return {**game, **changes}


def test_the_page_says_what_was_searched_and_why_the_search_stopped():
    from arena.leaderboard import _adapted_answer, _adapted_html, _adapted_lines

    line = _adapted_answer(_game())
    assert "(`badnets` searched by `arena oracle`), the value is 0.100; the defenders were not searched." in line
    assert "the best single defense by worst case is then `strip` (-0.100): none stays above zero." in line.lower()
    assert "not converged: the time budget ran out, so the attacker may gain more" in line
    section = "\n".join(_adapted_lines(_game()))
    assert "| the final game (the defenders as written: none searched) | 0.100 |" in section and "(not converged: the time budget ran out)" in section
    assert "none searched" in _adapted_html(_game())

    both = _game(searched={"attackers": ["badnets"], "defenders": ["strip"]}, converged=True, stopped_by="convergence", value=0.2)
    line = _adapted_answer(both)
    assert "when both sides adapt (`strip` searched), 0.200." in line and "converge" not in line
    assert "| both adapt (the final game) | 0.200 |" in "\n".join(_adapted_lines(both))
    # a game recorded before the list was kept: worded as before, nothing claimed about what was searched
    old = _game(converged=False, stopped_by="iterations")
    del old["searched"]
    assert "(hyperparameters searched by `arena oracle`)" in _adapted_answer(old) and "iteration budget ran out" in _adapted_answer(old)
