"""Best responses found by a Ray Tune search (Ray started once for this module)."""

import os
from pathlib import Path

import pytest

from arena.oracle import double_oracle
from arena.params import Choice, Float, Space
from arena.search import best_response

SPACE = Space(x=Float(0.5, 0.0, 1.0), kind=Choice("a", options=("a", "b", "c")))


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the objectives below are this module's functions: Tune workers import it by name
    pythonpath = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield tmp_path_factory.mktemp("tune")
    ray.shutdown()


def _hole(config):
    """A planted hole: worth 1 only where kind is 'b' and x is above 0.6, else a gentle slope."""
    return 1.0 if config["kind"] == "b" and config["x"] > 0.6 else 0.1 * config["x"]


def test_the_search_finds_a_planted_hole_and_counts_crashed_trials(ray_local):
    def flaky(config):
        if config["kind"] == "c" and config["x"] < 0.5:
            raise RuntimeError("this configuration crashes on purpose")
        return _hole(config)

    found = best_response(flaky, SPACE.tune_space(), mode="max", trials=16, seed=0, storage_path=ray_local)
    assert found.value == 1.0 and found.config["kind"] == "b" and found.config["x"] > 0.6
    assert found.trials == 16 and found.failed >= 1  # crashed trials are counted, the search goes on
    again = best_response(flaky, SPACE.tune_space(), mode="max", trials=16, seed=0, storage_path=ray_local, name="again")
    assert again.config == found.config  # seeded: the same proposals


def test_an_interrupted_search_resumes_without_running_its_finished_trials_again(ray_local, tmp_path):
    calls, broken = tmp_path / "calls", tmp_path / "break"
    broken.touch()

    def counted(config):
        """`_hole`, writing one line per call; crashes on kind 'c' while `broken` exists (an interruption)."""
        with open(calls, "a") as f:
            f.write(f"{config['kind']} {config['x']}\n")
        if config["kind"] == "c" and broken.exists():
            raise RuntimeError("crashed on purpose")
        return _hole(config), {"kind": config["kind"]}

    first = best_response(counted, SPACE.tune_space(), mode="max", trials=8, seed=0, storage_path=tmp_path, name="resumable", resume=True, slots=2)
    assert not first.restored and first.failed >= 1 and len(calls.read_text().splitlines()) == 8
    assert first.extras == {"kind": first.config["kind"]}  # what the objective reported beside its value
    assert first.waiting >= 0.0
    broken.unlink()
    again = best_response(counted, SPACE.tune_space(), mode="max", trials=8, seed=0, storage_path=tmp_path, name="resumable", resume=True, slots=2)
    # only the crashed trials ran again; the finished ones were read back
    assert again.restored and again.failed == 0 and again.trials == 8
    assert len(calls.read_text().splitlines()) == 8 + first.failed
    assert again.value >= first.value


def test_trials_the_time_budget_cuts_are_unfinished_not_failed(ray_local, tmp_path):
    from arena.search import NothingFinished

    def slow(config):
        import time

        time.sleep(60)
        return config["x"]

    with pytest.raises(NothingFinished) as cut:
        best_response(slow, SPACE.tune_space(), mode="max", trials=2, seed=0, storage_path=tmp_path, name="cut", time_budget=3)
    assert cut.value.trials == 2 and cut.value.failed == 0


def test_waiting_counts_slot_time_between_trials_while_trials_were_due():
    from arena.search import scheduling_gaps

    # two slots; trials enter 1 s after the search starts, and the third 0.5 s after a slot frees
    spans = [(1.0, 5.0), (1.0, 6.0), (5.5, 8.0)]
    assert scheduling_gaps(spans, 0.0, 8.25, 2) == pytest.approx(1.0 + 1.0 + 0.5 + 0.25)


def test_a_gpu_share_per_trial_on_a_cluster_without_gpus_is_refused_before_any_trial(ray_local):
    import ray

    from arena.device import DeviceError

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray cluster has GPUs")
    with pytest.raises(DeviceError, match="the Ray cluster has none"):
        best_response(_hole, SPACE.tune_space(), mode="max", trials=2, seed=0, resources={"cpu": 1, "gpu": 0.25}, storage_path=ray_local, name="gpu-refused")
    assert not (Path(ray_local) / "gpu-refused").exists()  # no experiment was started


def test_with_budgets_only_trials_that_reach_the_last_one_compete(ray_local):
    def objective(config, budget):
        return config["x"] * budget  # the same ranking at every budget

    found = best_response(objective, SPACE.tune_space(), mode="max", trials=8, seed=0, storage_path=ray_local, name="budgets", budgets=[1, 2, 4])
    assert found.trials == 8 and found.failed == 0 and 0 <= found.stopped < 8
    assert found.value == pytest.approx(found.config["x"] * 4)  # a full-budget value, never a rung's
    with pytest.raises(ValueError, match="increasing"):
        best_response(objective, SPACE.tune_space(), mode="max", trials=2, seed=0, storage_path=ray_local, budgets=[2, 1])


def test_the_double_oracle_with_a_searched_attacker_moves_onto_the_hole(ray_local):
    # defenders: "plain" is beaten by the hole; "patch" closes it at a small cost elsewhere
    def utility(defender, attacker):
        hit = _hole(dict(attacker)) == 1.0
        return {"plain": 0.0 if hit else 0.9, "patch": 0.7}[defender]

    def attacker_oracle(defenders, mixture):
        def value(config):
            return float(sum(p * utility(d, tuple(sorted(config.items()))) for d, p in zip(defenders, mixture)))

        found = best_response(value, SPACE.tune_space(), mode="min", trials=16, seed=1, storage_path=ray_local, name="attacker")
        return tuple(sorted(found.config.items())), found.value

    def defender_oracle(attackers, mixture):
        values = {d: float(sum(p * utility(d, a) for a, p in zip(attackers, mixture))) for d in ("plain", "patch")}
        best = max(values, key=values.get)
        return best, values[best]

    start = (("kind", "a"), ("x", 0.5))
    result = double_oracle(["plain"], [start], utility, defender_oracle, attacker_oracle, max_iterations=5)
    assert result.iterations[0].value == pytest.approx(0.9) and result.iterations[0].attacker_gain == pytest.approx(0.9)
    assert result.converged and "patch" in result.defenders
    assert result.solution.value == pytest.approx(0.7)
    assert dict(zip(result.defenders, result.solution.defender))["patch"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"mode": "best"}, "mode"), ({"trials": 0}, "at least one trial")],
)
def test_bad_searches_are_refused_before_any_trial(kwargs, message):
    args = {"mode": "max", "trials": 5, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        best_response(_hole, SPACE.tune_space(), **args)


def test_a_space_with_nothing_to_search_is_refused():
    with pytest.raises(ValueError, match="nothing to search"):
        best_response(_hole, {"x": 0.5, "kind": "b"}, mode="max", trials=5, seed=0)
