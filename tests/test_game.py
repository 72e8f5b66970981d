"""The game: known equilibria, and properties over random matrices (Hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arena import game

FINE_PRUNING_TALK = np.array([[0.555, 0.468], [0.968, 0.986]])  # rows fine-tuning, fine-pruning


def test_fine_pruning_talk_table():
    sol = game.solve_zero_sum(FINE_PRUNING_TALK)
    assert sol.value == pytest.approx(0.968)
    assert sol.defender == pytest.approx([0.0, 1.0])  # fine-pruning dominates
    assert sol.attacker == pytest.approx([1.0, 0.0])  # against it, the baseline attack is better
    assert sol.exploitability == pytest.approx(0.0, abs=1e-7)


def test_matching_pennies_is_uniform_with_value_zero():
    sol = game.solve_zero_sum(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    assert sol.value == pytest.approx(0.0, abs=1e-9)
    assert sol.defender == pytest.approx([0.5, 0.5]) and sol.attacker == pytest.approx([0.5, 0.5])


def test_rock_paper_scissors():
    rps = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=float)
    sol = game.solve_zero_sum(rps)
    assert sol.defender == pytest.approx([1 / 3] * 3, abs=1e-6) and sol.value == pytest.approx(0, abs=1e-9)


def test_max_entropy_picks_the_uniform_mixture_over_identical_rows():
    # both rows are optimal; the LP may return a vertex, the maxent refinement splits evenly
    sol = game.solve_zero_sum(np.array([[0.5, 0.2], [0.5, 0.2]]))
    assert sol.defender == pytest.approx([0.5, 0.5], abs=1e-4)


def test_max_entropy_picks_the_centre_of_a_face_of_equilibria_that_no_copy_explains():
    # optimal defender mixtures are (t, t, 1 - 2t) for t in [0, 1/2]; the LP returns a vertex
    # (t = 0 or 1/2), the maximum-entropy one is t = 1/3
    sol = game.solve_zero_sum(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    assert sol.value == pytest.approx(0.5, abs=1e-9)
    assert sol.defender == pytest.approx([1 / 3] * 3, abs=1e-5)


def test_max_entropy_may_sit_where_a_column_the_lp_left_slack_binds():
    # optimal defender mixtures are (t, 1 - t, 0) for t in [2/3, 1]; the LP's vertex t = 1 leaves
    # the first column slack (0.7 > 0.5), the maximum-entropy mixture t = 2/3 makes it bind
    sol = game.solve_zero_sum(np.array([[0.7, 0.5], [0.1, 0.5], [0.2, 0.1]]))
    assert sol.value == pytest.approx(0.5, abs=1e-9)
    assert sol.defender == pytest.approx([2 / 3, 1 / 3, 0.0], abs=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((0, 2)), np.array([[1.0, np.nan]]), np.array([1.0, 2.0])])
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError):
        game.solve_zero_sum(bad)


matrices = st.tuples(st.integers(1, 6), st.integers(1, 6)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=st.floats(-1, 1, allow_nan=False, allow_infinity=False))
)


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_mixtures_are_distributions_and_the_value_is_both_guarantees(a):
    sol = game.solve_zero_sum(a)
    for p in (sol.defender, sol.attacker):
        assert np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    # the defender's mixture guarantees at least the value, the attacker's at most
    assert np.min(sol.defender @ a) >= sol.value - 1e-6
    assert np.max(a @ sol.attacker) <= sol.value + 1e-6
    assert sol.exploitability == pytest.approx(0.0, abs=2e-6)


# Entries on a 1e-3 grid: two cells closer than the LP's tolerance (about 1e-9) are equal to the
# solver but not to a permutation of the game, and a face of equilibria between them can then be
# resolved either way (Hypothesis found [[0, 1e-9, ...], ...], which failed before and after the
# solver's rescaling alike).
grid_matrices = st.tuples(st.integers(1, 6), st.integers(1, 6)).flatmap(lambda shape: arrays(np.float64, shape, elements=st.integers(-1000, 1000).map(lambda v: v / 1000)))


@settings(max_examples=40, deadline=None)
@given(grid_matrices, st.randoms(use_true_random=False))
def test_invariant_to_permuting_rows_and_columns(a, rnd):
    rows = list(range(a.shape[0]))
    cols = list(range(a.shape[1]))
    rnd.shuffle(rows)
    rnd.shuffle(cols)
    sol = game.solve_zero_sum(a)
    perm = game.solve_zero_sum(a[np.ix_(rows, cols)])
    assert perm.value == pytest.approx(sol.value, abs=1e-7)
    d, _ = game.nash_averaged(a, sol)
    dp, _ = game.nash_averaged(a[np.ix_(rows, cols)], perm)
    assert dp == pytest.approx(d[rows], abs=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(2, 5), st.integers(2, 5)).flatmap(lambda s: arrays(np.int64, s, elements=st.integers(-1000, 1000), unique=True)), st.integers(0, 4))
def test_a_duplicated_attacker_does_not_change_the_defenders_scores(a, k):
    # generic games (distinct entries, 1e-3 apart): a degenerate game can have a whole face
    # of equilibria, and there a copy can tilt the maximum-entropy choice
    a = a / 1000.0
    k = k % a.shape[1]
    sol = game.solve_zero_sum(a)
    doubled = np.hstack([a, a[:, [k]]])
    sol2 = game.solve_zero_sum(doubled)
    assert sol2.value == pytest.approx(sol.value, abs=1e-7)
    d, _ = game.nash_averaged(a, sol)
    d2, _ = game.nash_averaged(doubled, sol2)
    assert d2 == pytest.approx(d, abs=1e-4)


def test_worst_case_and_interval_ranks():
    a = np.array([[0.9, 0.1], [0.5, 0.4]])
    dw, aw = game.worst_case(a)
    assert dw.tolist() == [0.1, 0.4] and aw.tolist() == [-0.9, -0.4]
    ranks = game.interval_ranks(np.array([0.8, 0.1, 0.75]), np.array([0.9, 0.2, 0.85]))
    assert ranks.tolist() == [1, 3, 1]  # the first and third overlap: a tie


def test_bootstrap_intervals_contain_the_point_estimate_when_seeds_agree():
    cells = np.repeat(FINE_PRUNING_TALK[:, :, None], 3, axis=2)
    out = game.bootstrap_scores(cells, replicates=20)
    sol = game.solve_zero_sum(FINE_PRUNING_TALK)
    d, _ = game.nash_averaged(FINE_PRUNING_TALK, sol)
    assert out["defender_nash_lo"] == pytest.approx(d) and out["defender_nash_hi"] == pytest.approx(d)


def test_general_sum_equilibria_are_verified():
    # prisoner's dilemma: the unique equilibrium is (defect, defect)
    a = np.array([[3.0, 0.0], [5.0, 1.0]])
    sol = game.solve_general_sum(a, a.T)
    assert sol.method == "vertex_enumeration" and len(sol.equilibria) == 1
    x, y = sol.equilibria[0]
    assert x == pytest.approx([0, 1]) and y == pytest.approx([0, 1])
    assert not game.is_equilibrium(a, a.T, np.array([1.0, 0.0]), np.array([1.0, 0.0]))


def _reference_max_entropy(a: np.ndarray, value: float) -> np.ndarray:
    """The maximum-entropy maximin mixture by brute force (SLSQP over the whole simplex): slow, simple, a test oracle."""
    from scipy.optimize import minimize

    m = a.shape[0]
    cons = [{"type": "eq", "fun": lambda x: x.sum() - 1.0}, {"type": "ineq", "fun": lambda x: a.T @ x - value + 1e-9}]
    res = minimize(lambda x: float(np.sum(np.clip(x, 1e-300, None) * np.log(np.clip(x, 1e-300, None)))), np.full(m, 1 / m), bounds=[(0, 1)] * m, constraints=cons, method="SLSQP", options={"maxiter": 1000, "ftol": 1e-14})
    return np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()


@settings(max_examples=80, deadline=None)
@given(st.tuples(st.integers(2, 6), st.integers(2, 6)).flatmap(lambda s: arrays(np.int64, s, elements=st.integers(-3, 3))))
def test_the_refinement_finds_the_maximum_entropy_equilibrium_of_tie_heavy_games(a):
    # entries from {-1, -2/3, ..., 1}: many ties, so faces of equilibria are common
    a = a / 3.0
    sol = game.solve_zero_sum(a)
    for mine, matrix, value in ((sol.defender, a, sol.value), (sol.attacker, -a.T, -sol.value)):
        assert np.min(mine @ matrix) >= value - 1e-6
        assert game.entropy(mine) >= game.entropy(_reference_max_entropy(matrix, value)) - 1e-4
