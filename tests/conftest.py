from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

PLUGINS = str(Path(__file__).parent / "fixture_plugins")

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


@contextlib.contextmanager
def ray_with_plugins(home: Path, registries: tuple[Any, ...]) -> Iterator[Path]:
    """Ray started once for a test module, its workers seeing the fixture plugins and `home` as
    ARENA_HOME; the registries refreshed with the plugins on the path, and again after."""
    import ray

    os.environ["ARENA_HOME"] = str(home)
    sys.path.insert(0, PLUGINS)
    for registry in registries:
        registry.refresh()
    pythonpath = os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath, "ARENA_HOME": str(home)}})
    try:
        yield home
    finally:
        ray.shutdown()
        sys.path.remove(PLUGINS)
        for registry in registries:
            registry.refresh()
        del os.environ["ARENA_HOME"]
