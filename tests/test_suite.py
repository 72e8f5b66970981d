"""Suite validation: every mistake is caught before anything runs, with a clear message."""

import pytest

from arena.suite import SuiteError, load_suite, parse_suite

BASE = {"dataset": "digits", "seeds": [0], "attackers": ["badnets"], "defenders": ["none"]}


def test_grid_points_are_strategies_and_duplicates_collapse():
    suite = parse_suite(
        {**BASE, "seeds": [0, 1], "attackers": ["none", {"name": "badnets", "grid": {"poison_rate": [0.05, 0.1]}}, "badnets"], "defenders": ["none", "fine_pruning"]},
        "s",
    )
    rates = sorted(a.param_dict["poison_rate"] for a in suite.attackers if a.name == "badnets")
    assert rates == [0.05, 0.1]  # plain `badnets` is the 0.1 grid point again
    assert len(suite.attackers) == 3 and len(suite.matches()) == 3 * 2 * 2
    assert len({m.key for m in suite.matches()}) == 12


@pytest.mark.parametrize(
    "change, message",
    [
        ({"attackers": ["badnet"]}, "Did you mean 'badnets'"),
        ({"defenders": [{"name": "fine_pruning", "params": {"max_accuracy_drop": 2}}]}, "max_accuracy_drop"),
        ({"attackers": [{"name": "badnets", "grid": {"poison_rate": []}}]}, "non-empty list"),
        ({"attackers": [{"name": "badnets", "grid": {"target": [0, 11]}}]}, "not a label"),
        ({"attackers": []}, "non-empty list"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [0, 0]}, "repeats"),
        ({"dataset": "digitz"}, "Did you mean 'digits'"),
        ({"clean_budget": 0.8}, "clean_budget"),
        ({"colour": "blue"}, "unknown suite keys"),
        ({"limits": {"max_matches": 1}, "seeds": [0, 1]}, "expands to 2 matches"),
        ({"limits": {"defense_timeout_s": -1}}, "positive"),
        ({"attackers": [{"name": "badnets", "param": {}}]}, "unknown keys"),
    ],
)
def test_bad_suites_are_refused_with_a_specific_message(change, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite({**BASE, **change}, "s")


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("dataset: digits\nseeds: [0, 1\nattackers: [badnets]\n")
    with pytest.raises(SuiteError, match="line"):
        load_suite(path)
    with pytest.raises(SuiteError, match="no suite file"):
        load_suite(tmp_path / "absent.yaml")


def test_a_folder_means_its_suite_yaml_and_names_the_suite(tmp_path):
    folder = tmp_path / "my-suite"
    folder.mkdir()
    (folder / "suite.yaml").write_text("dataset: digits\nseeds: [3]\nattackers: [badnets]\ndefenders: [none, pruning]\n")
    suite = load_suite(folder)
    assert suite.name == "my-suite" and suite.seeds == (3,) and len(suite.matches()) == 2


def test_the_published_suites_validate():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("leaderboards/*/suite.yaml")):
        assert load_suite(path).matches()


def test_a_clean_budget_too_small_for_a_defense_is_refused_before_anything_runs():
    from arena.registry import DEFENDERS
    from arena.suite import SuiteError

    needed = DEFENDERS.get("strip").min_clean
    with pytest.raises(SuiteError, match=f"defender 'strip' needs at least {needed} clean samples"):
        parse_suite({"name": "starved", "dataset": "digits", "seeds": [0], "clean_budget": 0.005, "attackers": ["badnets"], "defenders": ["strip"]}, "starved")
