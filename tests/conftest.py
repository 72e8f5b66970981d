from __future__ import annotations

import os

import pytest
import torch

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
