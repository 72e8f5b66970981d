"""The double oracle: strategy sets grown by best responses until neither side gains (docs/design.md §6).

McMahan, Gordon, Blum, "Planning in the presence of cost functions controlled by an adversary"
(ICML 2003); as policy-space response oracles, Lanctot et al., "A unified game-theoretic approach
to multiagent reinforcement learning" (NeurIPS 2017). Start from a restricted game (the suite's
strategies); solve it (zero-sum LP, maximum-entropy equilibrium); ask each side's oracle for a
best response to the other side's equilibrium mixture; add a response only when it gains more
than `epsilon + margin` over the game value (margin: what the seeds cannot tell apart); play
its row or column; repeat until neither side gains or the iteration budget is spent.

This module is the loop alone: strategies are any hashable values, `utility(defender, attacker)`
plays one cell, and an oracle is any search that returns a strategy with its expected utility
against a mixture. With exact oracles the loop ends at an equilibrium of the whole game; with a
search (Ray Tune over a hyperparameter space) the result is an empirical ε-equilibrium relative
to that search: the final gains bound how much a best response *the oracles could find* gains,
not what any response could.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from arena.game import ZeroSumSolution, solve_zero_sum

D = TypeVar("D", bound=Hashable)
A = TypeVar("A", bound=Hashable)

# An oracle gets the opponent's strategies and equilibrium mixture, and returns a response with
# the responder's expected *defender* utility against that mixture (the attacker's oracle
# returns the lowest it found, the defender's the highest), and optionally that utility's own
# margin (what its seeds cannot tell apart), added to the loop's `margin` for that response.
DefenderOracle = Callable[[Sequence[A], np.ndarray], tuple[D, float] | tuple[D, float, float]]
AttackerOracle = Callable[[Sequence[D], np.ndarray], tuple[A, float] | tuple[A, float, float]]


@dataclass(frozen=True)
class Iteration:
    """One round: the restricted game's value, each side's best response and what it gains."""

    index: int
    size: tuple[int, int]  # restricted game (defenders, attackers) that was solved
    value: float
    best_defender: Hashable
    defender_gain: float  # its defender utility against the attacker mixture, minus the value
    best_attacker: Hashable
    attacker_gain: float  # the value, minus the defender utility it leaves against the defender mixture
    added_defender: bool
    added_attacker: bool
    defender_margin: float = 0.0  # the margin the defender's gain had to clear beyond epsilon
    attacker_margin: float = 0.0


@dataclass
class OracleResult(Generic[D, A]):
    defenders: list[D]
    attackers: list[A]
    matrix: np.ndarray  # defender utility, rows defenders, columns attackers
    solution: ZeroSumSolution
    iterations: list[Iteration] = field(default_factory=list)
    converged: bool = False  # neither side gained more than epsilon + margin

    @property
    def exploitability_bound(self) -> float:
        """What the oracles' best responses gained against the final equilibrium, both sides summed:
        0 at an exact equilibrium; relative to the oracles' search, not a proof."""
        last = self.iterations[-1]
        return max(last.defender_gain, 0.0) + max(last.attacker_gain, 0.0)


def double_oracle(
    defenders: Sequence[D],
    attackers: Sequence[A],
    utility: Callable[[D, A], float],
    defender_oracle: DefenderOracle,
    attacker_oracle: AttackerOracle,
    *,
    epsilon: float = 0.0,
    margin: float = 0.0,
    max_iterations: int = 20,
    on_iteration: Callable[[Iteration], None] | None = None,
    out_of_time: Callable[[], bool] | None = None,
) -> OracleResult[D, A]:
    """Grow the game from `defenders` x `attackers` by best responses (see the module docstring).
    `out_of_time()`, asked after each round's responses, ends the loop there as the iteration
    budget would."""
    if not defenders or not attackers:
        raise ValueError("the double oracle needs at least one defender and one attacker to start from")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")
    rows, cols = list(dict.fromkeys(defenders)), list(dict.fromkeys(attackers))
    matrix = np.array([[utility(d, a) for a in cols] for d in rows], dtype=float)
    iterations: list[Iteration] = []
    converged = False
    for index in range(max_iterations):
        solution = solve_zero_sum(matrix)
        best_d, d_value, d_margin = (*defender_oracle(cols, solution.attacker), 0.0)[:3]
        best_a, a_value, a_margin = (*attacker_oracle(rows, solution.defender), 0.0)[:3]
        d_gain, a_gain = d_value - solution.value, solution.value - a_value
        d_margin, a_margin = margin + d_margin, margin + a_margin
        gains_d = d_gain > epsilon + d_margin and best_d not in rows
        gains_a = a_gain > epsilon + a_margin and best_a not in cols
        # a round cut short by the time budget certifies nothing: its searches may not have run
        timed_out = out_of_time is not None and out_of_time()
        converged = not gains_d and not gains_a and not timed_out
        # the last round's responses are reported, not added: the reported equilibrium stays the
        # one the reported gains were measured against
        last = converged or timed_out or index == max_iterations - 1
        step = Iteration(index, matrix.shape, solution.value, best_d, d_gain, best_a, a_gain, gains_d and not last, gains_a and not last, d_margin, a_margin)
        iterations.append(step)
        if on_iteration is not None:
            on_iteration(step)
        if last:
            break
        if gains_d:
            rows.append(best_d)
            matrix = np.vstack([matrix, [utility(best_d, a) for a in cols]])
        if gains_a:
            cols.append(best_a)
            matrix = np.hstack([matrix, np.array([[utility(d, best_a)] for d in rows])])
    return OracleResult(rows, cols, matrix, solution, iterations, converged)
