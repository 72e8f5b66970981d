"""The double oracle loop on games whose equilibria are known."""

import numpy as np
import pytest

from arena import game
from arena.oracle import double_oracle


def _exact_oracles(full: np.ndarray):
    """Best responses by enumeration over the whole game (strategies are row / column indices)."""

    def defender(attackers, mixture):
        values = full[:, list(attackers)] @ mixture
        return int(np.argmax(values)), float(values.max())

    def attacker(defenders, mixture):
        values = mixture @ full[list(defenders), :]
        return int(np.argmin(values)), float(values.min())

    return defender, attacker


def test_with_exact_oracles_the_loop_ends_at_the_whole_games_equilibrium():
    full = np.random.default_rng(3).uniform(-1, 1, (25, 25))
    result = double_oracle([0], [0], lambda d, a: float(full[d, a]), *_exact_oracles(full), max_iterations=60)
    assert result.converged
    assert result.solution.value == pytest.approx(game.solve_zero_sum(full).value, abs=1e-7)
    assert result.exploitability_bound <= 1e-7
    assert result.matrix.shape == (len(result.defenders), len(result.attackers))
    assert len(result.defenders) < 25 and len(result.attackers) < 25  # found without playing the whole grid
    assert result.iterations[0].value == pytest.approx(full[0, 0])


def test_a_planted_hole_is_found_and_the_equilibrium_moves_onto_it():
    # the suite's game: two defenders, two attackers, value 0.8; outside it, attacker 2 (the
    # hole) beats both defenders, and only defender 2 (the patch) closes it
    full = np.array(
        [
            [0.9, 0.8, -0.5],
            [0.8, 0.9, -0.5],
            [0.7, 0.7, 0.6],
        ]
    )
    result = double_oracle([0, 1], [0, 1], lambda d, a: float(full[d, a]), *_exact_oracles(full))
    first = result.iterations[0]
    assert first.value == pytest.approx(0.85) and first.best_attacker == 2 and first.attacker_gain == pytest.approx(1.35)
    assert first.added_attacker and not first.added_defender
    assert result.converged and 2 in result.attackers and 2 in result.defenders
    assert result.solution.value == pytest.approx(game.solve_zero_sum(full).value)
    weights = dict(zip(result.defenders, result.solution.defender))
    assert weights[2] > 0.5  # the patch carries the defender's equilibrium


def test_a_spent_budget_reports_the_last_responses_without_adding_them():
    full = np.random.default_rng(4).uniform(-1, 1, (10, 10))
    result = double_oracle([0], [0], lambda d, a: float(full[d, a]), *_exact_oracles(full), max_iterations=1)
    (only,) = result.iterations
    assert not result.converged and result.defenders == [0] and result.attackers == [0]
    assert not only.added_defender and not only.added_attacker
    assert result.exploitability_bound == pytest.approx(max(only.defender_gain, 0) + max(only.attacker_gain, 0)) and result.exploitability_bound > 0


def test_gains_within_epsilon_do_not_grow_the_game():
    full = np.array([[0.5, 0.5], [0.52, 0.49]])
    result = double_oracle([0], [0], lambda d, a: float(full[d, a]), *_exact_oracles(full), epsilon=0.05)
    assert result.converged and result.defenders == [0] and result.attackers == [0]


@pytest.mark.parametrize("args, message", [(([], [0]), "at least one defender"), (([0], []), "at least one defender")])
def test_an_empty_start_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        double_oracle(*args, lambda d, a: 0.0, lambda *_: (0, 0.0), lambda *_: (0, 0.0))


def test_a_zero_budget_is_refused():
    with pytest.raises(ValueError, match="max_iterations"):
        double_oracle([0], [0], lambda d, a: 0.0, lambda *_: (0, 0.0), lambda *_: (0, 0.0), max_iterations=0)


def test_a_response_must_clear_its_own_seed_margin_to_join():
    """A best response whose gain the seeds cannot tell from noise is reported, not added."""
    from arena.adaptive import seed_margin

    assert seed_margin([0.4]) == 0.0 and seed_margin([0.5, 0.5, 0.5]) == 0.0
    assert seed_margin([0.0, 1.0]) == pytest.approx(0.5)
    table = {("d0", "a0"): 0.5, ("d0", "a1"): 0.2}

    def noisy(defenders, mixture):  # gains 0.3, but its seeds disagree by 0.4 either side
        return "a1", 0.2, 0.4

    result = double_oracle(["d0"], ["a0"], lambda d, a: table[d, a], lambda a, m: ("d0", 0.5), noisy, epsilon=0.01, max_iterations=3)
    assert result.converged and result.attackers == ["a0"] and result.iterations[0].attacker_margin == 0.4
    sure = double_oracle(["d0"], ["a0"], lambda d, a: table[d, a], lambda a, m: ("d0", 0.5), lambda d, m: ("a1", 0.2, 0.1), epsilon=0.01, max_iterations=3)
    assert sure.attackers == ["a0", "a1"]


def test_a_spent_time_budget_makes_the_round_in_hand_the_last():
    table = {("d0", "a0"): 0.5, ("d0", "a1"): 0.2}
    result = double_oracle(["d0"], ["a0"], lambda d, a: table[d, a], lambda a, m: ("d0", 0.5), lambda d, m: ("a1", 0.2), max_iterations=5, out_of_time=lambda: True)
    assert len(result.iterations) == 1 and not result.converged and result.attackers == ["a0"]  # reported, not added
    assert result.iterations[0].attacker_gain == pytest.approx(0.3)
    # no gain found in a round the budget cut short is not convergence: its searches may not have run
    idle = double_oracle(["d0"], ["a0"], lambda d, a: table[d, a], lambda a, m: ("d0", 0.5), lambda d, m: ("a0", 0.5), max_iterations=5, out_of_time=lambda: True)
    assert len(idle.iterations) == 1 and not idle.converged
