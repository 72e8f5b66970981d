"""The game between attackers and defenders (docs/design.md §6): pure functions of a utility matrix.

Rows are defender strategies, columns attacker strategies, cells the defender's utility
u_D = CA − ASR. Zero-sum by default (u_A = −u_D): solved exactly by linear programming, then
refined to the maximum-entropy equilibrium, which is unique and which a duplicated strategy
cannot move (Balduzzi et al., "Re-evaluating evaluation", 2018: Nash averaging).
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog, minimize

TOL = 1e-7


@dataclass(frozen=True)
class ZeroSumSolution:
    value: float  # the defender's guaranteed utility at equilibrium
    defender: np.ndarray  # row mixture
    attacker: np.ndarray  # column mixture
    exploitability: float  # how much a best response gains against the pair; 0 at equilibrium

    def to_dict(self, rows: list[str], cols: list[str]) -> dict[str, Any]:
        return {
            "value": self.value,
            "defender": {r: float(p) for r, p in zip(rows, self.defender)},
            "attacker": {c: float(p) for c, p in zip(cols, self.attacker)},
            "exploitability": self.exploitability,
        }


def _check(matrix: np.ndarray) -> np.ndarray:
    a = np.asarray(matrix, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"a utility matrix must be 2-D and non-empty, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("a utility matrix must hold finite numbers only")
    return a


def exploitability(matrix: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Attacker's best-response gain plus defender's: (max_i (A y)_i) − (min_j (xᵀA)_j) ≥ 0."""
    a = _check(matrix)
    return float(np.max(a @ y) - np.min(x @ a))


def _maximin(a: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """max_x min_j (xᵀA)_j over mixtures x: the row player's LP. Returns the value, an optimal
    row mixture and, from the LP's dual, an optimal column mixture (one LP solves both sides).
    HiGHS' interior point method (with crossover to a vertex): on dense games it ran faster
    than its simplex methods here (timings in benchmarks/results/nash-scaling.jsonl)."""
    m, n = a.shape
    # variables (x_1..x_m, v); minimise -v; A_jᵀx >= v  <=>  -Aᵀx + v <= 0
    c = np.zeros(m + 1)
    c[-1] = -1.0
    a_ub = np.hstack([-a.T, np.ones((n, 1))])
    a_eq = np.hstack([np.ones((1, m)), np.zeros((1, 1))])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=[(0, None)] * m + [(None, None)], method="highs-ipm")
    if not res.success:  # pragma: no cover - a bounded feasible LP always solves
        raise RuntimeError(f"linear program failed: {res.message}")
    x = np.clip(res.x[:m], 0, None)
    y = np.clip(-res.ineqlin.marginals, 0, None)  # the constraints' prices: the column player's mixture
    return float(res.x[-1]), x / x.sum(), y / y.sum()


def _max_entropy(a: np.ndarray, value: float, start: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The maximum-entropy mixture among those that guarantee `value` against every column.

    A game whose optimal set is one point (generic games) needs no refinement; otherwise it is
    solved through its convex dual, so a 1000x1000 game takes seconds. Only rows that are best
    responses to the opponent's optimal mixture `other` can carry weight in any optimal mixture
    (complementary slackness); on those rows S the answer is x ∝ exp(A[S, T] λ), with λ ≥ 0
    minimising the dual log Σ exp(A[S, T] λ) − value · Σ λ (L-BFGS-B), where T holds the columns
    that bind. T starts as the columns tight at the LP's own optimum `start` and grows by every
    column the answer violates (the maximum-entropy mixture can make bind a column the LP's
    vertex left slack), until none is violated. The answer is kept only if it guarantees the
    value; otherwise the LP's mixture stands.
    """
    m = a.shape[0]
    if m == 1:
        return np.ones(1)
    scale = max(1.0, float(np.abs(a).max()))
    rows = np.flatnonzero(a @ other >= value - 1e-7 * scale)
    if len(rows) <= 1:
        return start
    # Every optimal mixture meets the columns the opponent plays with equality (complementary
    # slackness); when those equations and Σx = 1 fix x on S, the optimal set is one point.
    played = np.flatnonzero(other > 1e-9)
    if np.linalg.matrix_rank(np.vstack([a[np.ix_(rows, played)].T, np.ones(len(rows))])) == len(rows):
        return start
    binding = start @ a <= value + 1e-7 * scale
    x = start
    for _ in range(a.shape[1]):
        cols = np.flatnonzero(binding)
        b = a[np.ix_(rows, cols)]

        def dual(lam: np.ndarray, b: np.ndarray = b) -> tuple[float, np.ndarray]:
            z = b @ lam
            top = z.max()
            w = np.exp(z - top)
            total = w.sum()
            return float(top + np.log(total) - value * lam.sum()), b.T @ (w / total) - value

        res = minimize(dual, np.zeros(len(cols)), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * len(cols), options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15})
        z = b @ res.x
        x = np.zeros(m)
        x[rows] = np.exp(z - z.max())
        x /= x.sum()
        violated = (x @ a < value - 1e-9 * scale) & ~binding
        if not violated.any():
            break
        binding |= violated
    return x if np.min(x @ a) >= value - 1e-6 * scale else start


def _tidy(p: np.ndarray) -> np.ndarray:
    """Solver dust (weights below 1e-6) to exact zeros, so supports read cleanly."""
    p = np.where(p < 1e-6, 0.0, p)
    return p / p.sum()


def solve_zero_sum(matrix: np.ndarray, max_entropy: bool = True) -> ZeroSumSolution:
    """Equilibrium of the zero-sum game where the row player receives `matrix` and the column player its negation."""
    a = _check(matrix)
    # The equilibria do not change when every cell is divided by one positive number, but the LP
    # solver does: HiGHS refuses coefficients beyond 1e15 and drops those below 1e-9. So the game
    # is solved with its largest cell brought into (0.5, 1] by a power of two (exact, and no
    # change at all for utilities CA − ASR whose largest is above 0.5), and the figures scaled back.
    exponent = _scale_exponent(float(np.abs(a).max()))
    scaled = np.ldexp(a, -exponent)
    value, x, y = _maximin(scaled)
    if max_entropy:
        x, y = _tidy(_max_entropy(scaled, value, x, y)), _tidy(_max_entropy(-scaled.T, -value, y, x))
    with np.errstate(over="ignore"):  # a solve that failed on cells near the float limit: an infinite exploitability says so
        gap = float(np.ldexp(exploitability(scaled, x, y), exponent))
    # a game's value lies between its cells, whatever the solver's last digit (or a cell scaled
    # down into the subnormal range) says
    value = min(max(float(np.ldexp(value, exponent)), float(a.min())), float(a.max()))
    return ZeroSumSolution(value=value, defender=x, attacker=y, exploitability=gap)


def _scale_exponent(largest: float) -> int:
    """The e with largest / 2**e in (0.5, 1]; 0 for an all-zero game."""
    if largest == 0:
        return 0
    mantissa, exponent = math.frexp(largest)  # largest = mantissa · 2**exponent, mantissa in [0.5, 1)
    return exponent - 1 if mantissa == 0.5 else exponent


# ---------------------------------------------------------------------------------------------
# General-sum, through nashpy, every answer verified


@dataclass(frozen=True)
class GeneralSumSolution:
    method: str
    equilibria: list[tuple[np.ndarray, np.ndarray]]
    note: str


def is_equilibrium(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, tol: float = 1e-6) -> bool:
    """Neither player gains more than `tol` by deviating (no exact float equality)."""
    if np.any(x < -tol) or np.any(y < -tol) or abs(x.sum() - 1) > tol or abs(y.sum() - 1) > tol:
        return False
    return bool(np.max(a @ y) <= x @ a @ y + tol and np.max(x @ b) <= x @ b @ y + tol)


def _lemke_howson_worker(a: np.ndarray, b: np.ndarray, label: int, queue: Any) -> None:
    import warnings

    import nashpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = nashpy.Game(a, b).lemke_howson(initial_dropped_label=label)
    queue.put((np.asarray(x, dtype=float), np.asarray(y, dtype=float)))


def solve_general_sum(a: np.ndarray, b: np.ndarray, time_limit_s: float = 10.0) -> GeneralSumSolution:
    """Equilibria of the bimatrix game (A for rows, B for columns).

    Small games (both sides ≤ 6 strategies): vertex enumeration, which finds every extreme
    equilibrium of a nondegenerate game and stays fast at that size. Larger games: Lemke-Howson
    from each initial label, each run in a separate process under `time_limit_s` because it can
    loop forever on degenerate games. Every returned profile is checked by `is_equilibrium`;
    the ones that fail are dropped and counted in the note.
    """
    import warnings

    import nashpy

    a, b = _check(a), _check(b)
    if a.shape != b.shape:
        raise ValueError(f"payoff matrices differ in shape: {a.shape} and {b.shape}")
    found: list[tuple[np.ndarray, np.ndarray]] = []
    rejected = 0
    if max(a.shape) <= 6:
        method = "vertex_enumeration"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = list(nashpy.Game(a, b).vertex_enumeration())
    else:
        method = "lemke_howson"
        candidates = []
        ctx = mp.get_context("spawn")
        for label in range(sum(a.shape)):
            queue = ctx.Queue()
            proc = ctx.Process(target=_lemke_howson_worker, args=(a, b, label, queue), daemon=True)
            proc.start()
            proc.join(time_limit_s)
            if proc.is_alive():
                proc.kill()
                rejected += 1
                continue
            if not queue.empty():
                candidates.append(queue.get())
    for x, y in candidates:
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.shape == (a.shape[0],) and y.shape == (a.shape[1],) and np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and is_equilibrium(a, b, x, y):
            if not any(np.allclose(x, fx, atol=1e-6) and np.allclose(y, fy, atol=1e-6) for fx, fy in found):
                found.append((x, y))
        else:
            rejected += 1
    note = f"{method}: {len(found)} verified equilibria" + (f", {rejected} runs rejected (invalid or over the time limit)" if rejected else "")
    return GeneralSumSolution(method, found, note)


# ---------------------------------------------------------------------------------------------
# Rankings


def nash_averaged(matrix: np.ndarray, solution: ZeroSumSolution) -> tuple[np.ndarray, np.ndarray]:
    """(defender scores, attacker scores): each strategy's utility against the other side's
    maximum-entropy equilibrium mixture. Attacker utility is −u_D."""
    a = _check(matrix)
    return a @ solution.attacker, -(solution.defender @ a)


def worst_case(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(defender scores, attacker scores): each strategy's utility against its worst opponent."""
    a = _check(matrix)
    return a.min(axis=1), -a.max(axis=0)


def interval_ranks(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Rank 1 + the number of entries whose interval lies wholly above this one's: entries
    whose intervals overlap share a rank (higher scores are better)."""
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    return np.array([1 + int(np.sum(lower > upper[i])) for i in range(len(lower))])


def bootstrap_scores(cells: np.ndarray, replicates: int = 200, seed: int = 0, level: float = 0.9) -> dict[str, np.ndarray]:
    """Bootstrap over seeds. `cells` is (defenders, attackers, seeds) of per-seed utilities
    (NaN where a seed is missing). Each replicate resamples the seeds of every cell, solves the
    game, and scores both sides; returns percentile intervals of the four scores."""
    rng = np.random.default_rng(seed)
    d, a, s = cells.shape
    keys = ("defender_nash", "attacker_nash", "defender_worst", "attacker_worst")
    draws: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for _ in range(replicates):
        idx = rng.integers(0, s, size=(d, a, s))
        sample = np.take_along_axis(cells, idx, axis=2)
        matrix = np.nanmean(sample, axis=2)
        if not np.all(np.isfinite(matrix)):
            matrix = np.where(np.isfinite(matrix), matrix, np.nanmean(cells, axis=2))
        sol = solve_zero_sum(matrix)
        dn, an = nash_averaged(matrix, sol)
        dw, aw = worst_case(matrix)
        for k, v in zip(keys, (dn, an, dw, aw)):
            draws[k].append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, np.ndarray] = {}
    for k in keys:
        stack = np.vstack(draws[k])
        out[k + "_lo"] = np.percentile(stack, lo, axis=0)
        out[k + "_hi"] = np.percentile(stack, hi, axis=0)
    return out


def entropy(p: np.ndarray) -> float:
    p = np.asarray(p, float)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p))) if len(p) else math.nan


def read_matrix_csv(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """A utility matrix from CSV: the first row holds the attacker labels after an empty corner
    cell, the first column the defender labels, the cells the defender's utility. Every cell
    must be a finite number and no label may repeat (a clear UsageError otherwise)."""
    from arena.errors import UsageError

    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise UsageError(f"no matrix file at {path}.") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; give the path of a CSV file.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc}).") from None
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's export may open with a byte-order mark
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start} is {raw[exc.start : exc.start + 1]!r}); save it as UTF-8 CSV.") from None
    return parse_matrix_csv(text, path)


def parse_matrix_csv(text: str, where: str) -> tuple[list[str], list[str], np.ndarray]:
    """The labels and cells of a CSV utility matrix (see `read_matrix_csv`); `where` names it in errors."""
    import csv

    from arena.errors import UsageError

    try:
        lines = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise UsageError(f"{where} is not a readable CSV matrix ({exc}).") from None
    if len(lines) < 2 or len(lines[0]) < 2:
        raise UsageError(f"{where} holds no cells: the first row names the attackers after an empty corner cell, the first column the defenders.")
    cols = [c.strip() for c in lines[0][1:]]
    rows, values = [], []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(lines[0]):
            raise UsageError(f"{where}: row {number} has {len(line)} fields, the header {len(lines[0])}; every row is a defender label and one cell per attacker.")
        rows.append(line[0].strip())
        for col, cell in zip(cols, line[1:]):
            try:
                value = float(cell)
            except ValueError:
                raise UsageError(f"{where}: the cell of defender {rows[-1]!r} against attacker {col!r} (row {number}) is {cell!r}, not a number.") from None
            if not math.isfinite(value):
                raise UsageError(f"{where}: the cell of defender {rows[-1]!r} against attacker {col!r} (row {number}) is {cell!r}; the game needs a finite number in every cell.")
            values.append(value)
    for what, labels in (("defender (row)", rows), ("attacker (column)", cols)):
        if not all(labels):
            raise UsageError(f"{where} has an empty {what} label.")
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise UsageError(f"{where} repeats the {what} label {repeated[0]!r}.")
    return rows, cols, np.array(values, dtype=float).reshape(len(rows), len(cols))
