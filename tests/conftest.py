from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

PLUGINS = str(Path(__file__).parent / "fixture_plugins")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


# On an AMX machine (oneDNN reports "AVX10.1 and Intel AMX") the digits models train to other bits
# than where the published boards and these tests' figures were measured, under a numerics
# record that reads the same (torch 2.13.0+cpu, AVX512, 1 thread): `arena leaderboard verify
# digits-smoke` reproduces 0 of 3 cells there, with the code of before the sandbox too, and
# pinning oneDNN's ISA, MKL's code path or ATen's capability did not bring the published bits
# back (benchmarks/RESULTS.md, "The sandbox"). Tests whose single-seed figures sit near their
# threshold fail there; they keep running everywhere else.
NUMERICS_DIVERGE = "amx_tile" in _cpu_flags()
diverging_numerics = pytest.mark.xfail(
    NUMERICS_DIVERGE, strict=False, reason="single-seed figure near its threshold; models train to other bits on AMX machines (tests/conftest.py, NUMERICS_DIVERGE)"
)

# Tests share two cores with whatever else runs; one thread keeps timings sane and results exact.
torch.set_num_threads(1)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local test cluster needs no token file in the home


@pytest.fixture
def arena_home(tmp_path, monkeypatch):
    """A fresh, empty ARENA_HOME for one test."""
    home = tmp_path / "arena-home"
    monkeypatch.setenv("ARENA_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory):
    """An ARENA_HOME shared by the tests of a session, so a model trained once is reused."""
    return tmp_path_factory.mktemp("shared-arena-home")


@pytest.fixture(scope="session")
def store(shared_home):
    """The artifact store in `shared_home`."""
    from arena.store import ArtifactStore

    return ArtifactStore(shared_home)


@pytest.fixture(scope="session")
def splits():
    """The players' splits of digits at the default 5% clean budget."""
    from arena.data import load_dataset, player_splits

    return player_splits(load_dataset("digits"), 0.05)


@pytest.fixture(scope="module")
def redteam():
    """The fixture plugins on the path (the red team of tests/fixture_plugins/arena_redteam.py
    among them), found through their entry points like any installed plugin."""
    sys.path.insert(0, PLUGINS)
    refresh_registries()
    yield
    sys.path.remove(PLUGINS)
    refresh_registries()  # every one: a registry listed while the plugins were on the path would offer them after


def refresh_registries() -> None:
    """Forget the discovered plugins of every extension point (after the path changed)."""
    from arena.data import DATASETS
    from arena.models import ARCHITECTURES
    from arena.registry import ATTACKERS, DEFENDERS
    from arena.triggers import TRIGGERS

    for registry in (ATTACKERS, DEFENDERS, TRIGGERS, ARCHITECTURES, DATASETS):
        registry.refresh()


@contextlib.contextmanager
def ray_with_plugins(home: Path) -> Iterator[Path]:
    """Ray started once for a test module, its workers seeing the fixture plugins and `home` as
    ARENA_HOME; the registries refreshed with the plugins on the path, and again after."""
    import ray

    os.environ["ARENA_HOME"] = str(home)
    sys.path.insert(0, PLUGINS)
    refresh_registries()
    pythonpath = os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "ARENA_HOME": str(home)}})
    try:
        yield home
    finally:
        ray.shutdown()
        sys.path.remove(PLUGINS)
        refresh_registries()
        del os.environ["ARENA_HOME"]
