"""Fuzzing the readers of user input (issue 17): a suite file, a matrix CSV, `--set` overrides, a
manifest on disk. Each input is either accepted, and then valid, or refused with an ArenaError
(the CLI prints it as one paragraph); any other exception is a traceback the user would see."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arena.errors import ArenaError

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Scalars of every kind YAML and JSON can hold, the awkward floats included.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["badnets", "none", "fine_pruning", "digits", "[/]", "0.05", "nan"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


# ---------------------------------------------------------------------------------------------
# Suites


nasty_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([math.nan, math.inf, -math.inf, 2**32, -1, 0, 1.5, True]))


def strategy_entries(params: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A valid attackers/defenders list: names, fixed parameters, small grids."""
    names = st.sampled_from(sorted(params))
    def point(name: str) -> st.SearchStrategy:
        as_grid = params[name].map(lambda fixed: {k: [v] for k, v in fixed.items()})
        return st.fixed_dictionaries({"name": st.just(name)}, optional={"params": params[name], "grid": as_grid})

    return st.lists(names | st.sampled_from(sorted(params)).flatmap(point), min_size=1, max_size=3)


valid_suites = st.fixed_dictionaries(
    {
        "dataset": st.just("digits"),
        "seeds": st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
        "attackers": strategy_entries({"none": st.just({}), "badnets": st.fixed_dictionaries({}, optional={"target": st.integers(0, 9), "poison_rate": st.floats(0.01, 0.5)})}),
        "defenders": strategy_entries({"none": st.just({}), "fine_pruning": st.fixed_dictionaries({}, optional={"max_accuracy_drop": st.floats(0.0, 0.5)})}),
    },
    optional={
        "name": st.text(alphabet="abc-_", min_size=1, max_size=6),
        "clean_budget": st.floats(0.01, 0.5),
        "stealth_tolerance": st.floats(0.0, 1.0),
        "epochs": st.integers(1, 3),
        "gpus_per_task": st.just(0),
        "limits": st.fixed_dictionaries({}, optional={"attack_timeout_s": st.floats(1, 10), "defense_timeout_s": st.floats(1, 10), "retries": st.integers(0, 2), "max_matches": st.integers(1, 50)}),
    },
)


@st.composite
def suites(draw: st.DrawFn) -> dict:
    """A valid suite with, most of the time, one place made wrong: each check is reached with
    everything before it right, and a suite right everywhere is accepted now and then."""
    data = draw(valid_suites)
    place = draw(st.sampled_from(["", "name", "dataset", "seeds", "attackers", "defenders", "clean_budget", "stealth_tolerance", "epochs", "gpus_per_task", "limits", "limit", "param", "colour"]))
    if place in ("attackers", "defenders", "dataset", "name", "colour"):
        data[place] = draw(values)
    elif place == "seeds":
        data[place] = draw(st.lists(nasty_numbers, min_size=1, max_size=3) | values)
    elif place == "limit":
        data["limits"] = {draw(st.sampled_from(["attack_timeout_s", "defense_timeout_s", "retries", "max_matches", "other"])): draw(nasty_numbers | values)}
    elif place == "param":
        data["attackers"] = [{"name": "badnets", draw(st.sampled_from(["params", "grid"])): {draw(st.sampled_from(["target", "poison_rate", "other"])): draw(nasty_numbers | values)}}]
    elif place:
        data[place] = draw(nasty_numbers | values)
    return data


def check_suite_text(raw: bytes) -> None:
    from arena.suite import Suite, parse_suite, read_suite_yaml

    try:
        suite = parse_suite(read_suite_yaml(raw, "suite.yaml"), "s")
    except ArenaError:
        event("refused")
        return
    event("accepted")
    assert isinstance(suite, Suite) and suite.matches()
    assert all(math.isfinite(x) for x in (suite.clean_budget, suite.stealth_tolerance, suite.limits.attack_timeout_s, suite.limits.defense_timeout_s))
    assert all(0 <= seed < 2**32 for seed in suite.seeds)
    assert len(suite.matches()) <= suite.limits.max_matches


@FUZZ
@given(suites())
def test_suite_data_is_accepted_valid_or_refused_clearly(data):
    check_suite_text(yaml.safe_dump(data, allow_unicode=True).encode())


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(alphabet="abcdefgilmnorst:-[]{},.0123456789 \n\t'\"&*!|>?%@`#", max_size=200).map(str.encode)))
def test_suite_bytes_are_accepted_valid_or_refused_clearly(raw):
    check_suite_text(raw)


# ---------------------------------------------------------------------------------------------
# Matrix CSV

label_text = st.text(alphabet='ab,"[]/ \n', max_size=4)
labels = st.lists(label_text.filter(str.strip), min_size=1, max_size=4, unique_by=str.strip) | st.lists(label_text, min_size=1, max_size=4)
finite_cells = st.floats(-1, 1).map(str) | st.floats(allow_nan=False, allow_infinity=False).map(repr)
cells = st.one_of(finite_cells, finite_cells, finite_cells, st.floats().map(repr), st.sampled_from(["1e300", "-1e300", "1.7e308", "5e-324", "", "x", "1_0", " 2 "]))


@st.composite
def matrices_as_csv(draw: st.DrawFn) -> str:
    """A CSV matrix written the way a spreadsheet would, sometimes with a row cut or grown."""
    import csv
    import io

    cols, rows = draw(labels), draw(labels)
    table = [["", *cols]] + [[r, *(draw(cells) for _ in cols)] for r in rows]
    if draw(st.booleans()):
        row = draw(st.sampled_from(table))
        row.append(draw(cells)) if draw(st.booleans()) else row.pop()
    out = io.StringIO()
    csv.writer(out).writerows(table)
    return out.getvalue()


csv_text = st.one_of(st.text(alphabet=',\n\r"\' 0123456789.eE+-_abxyinfINFNa[]/', max_size=120), matrices_as_csv())


@FUZZ
@given(csv_text)
def test_matrix_csv_is_accepted_valid_or_refused_clearly(text):
    from arena.game import parse_matrix_csv, solve_zero_sum

    try:
        rows, cols, values = parse_matrix_csv(text, "m.csv")
    except ArenaError:
        event("refused")
        return
    event("accepted")
    assert values.shape == (len(rows), len(cols)) and np.all(np.isfinite(values))
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    solution = solve_zero_sum(values)  # whatever the magnitudes, an accepted matrix solves
    assert values.min() <= solution.value <= values.max()
    assert solution.defender.sum() == pytest.approx(1) and solution.attacker.sum() == pytest.approx(1)


# ---------------------------------------------------------------------------------------------
# --set overrides

set_value = st.one_of(st.text(max_size=10), st.sampled_from(["1", "0.05", "-1", "1e400", "nan", "inf", "true", "[/]", " 3 ", "9" * 5000]))


@FUZZ
@given(st.data())
def test_set_overrides_are_accepted_valid_or_refused_clearly(data):
    from arena.cli.match import parse_sets
    from arena.registry import ATTACKERS, DEFENDERS

    role, registry = data.draw(st.sampled_from([("attacker", ATTACKERS), ("defender", DEFENDERS)]))
    name = data.draw(st.sampled_from(registry.names()))
    cls = registry.get(name)
    key = st.sampled_from(sorted(cls.space) or ["x"]) | st.text(max_size=6)
    pairs = data.draw(st.lists(st.one_of(st.builds(lambda k, v: f"{role}.{k}={v}", key, set_value), st.text(max_size=12)), max_size=3))
    try:
        attacker_params, defender_params = parse_sets(pairs)
        strategy = cls(**(attacker_params if role == "attacker" else defender_params))
    except ArenaError:
        event("refused")
        return
    event("accepted")
    assert isinstance(strategy, cls)
    assert not any(isinstance(value, float) and not math.isfinite(value) for value in strategy.spec_params.values())


# ---------------------------------------------------------------------------------------------
# Manifests (the store is only called here)

KEY = "0" * 64

manifests = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"sha256": st.text(max_size=70) | values, "key": st.sampled_from([KEY, "other"]) | values},
        optional={"hmac": st.text(max_size=70) | values},
    ).map(lambda v: json.dumps(v).encode()),
    st.just(b"[" * 100_000),  # nested deeper than the JSON parser recurses
)


@FUZZ
@given(manifests)
def test_manifests_are_accepted_valid_or_refused_clearly(tmp_path_factory, raw):
    from arena.store import ArtifactStore

    store = ArtifactStore(tmp_path_factory.mktemp("store"))
    store.manifest_path(KEY).write_bytes(raw)
    try:
        manifest = store.read_manifest(KEY)
    except ArenaError:
        return
    assert isinstance(manifest, dict) and manifest["key"] == KEY
