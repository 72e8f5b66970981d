"""Every registered strategy passes the same contract a plugin author runs with `arena check`."""

import textwrap

import pytest

from arena.contract import AttackerContract, DefenderContract, check
from arena.registry import ATTACKERS, DEFENDERS


@pytest.mark.parametrize("name", ATTACKERS.names())
def test_attacker_contract(name):
    results = check("attacker", name)
    assert all(c.ok for c in results), [(c.name, c.detail) for c in results if not c.ok]


@pytest.mark.parametrize("name", DEFENDERS.names())
def test_defender_contract(name):
    results = check("defender", name)
    assert all(c.ok for c in results), [(c.name, c.detail) for c in results if not c.ok]


class TestFinePruningThroughTheBaseClass(DefenderContract):
    strategy = "fine_pruning"


class TestBadNetsThroughTheBaseClass(AttackerContract):
    strategy = "badnets"


BROKEN = """
import random
import time

import torch

from arena.data import load_dataset
from arena.params import Int, Space
from arena.protocol import DefenseOutcome
from arena.strategy import Defender


class Peeks(Defender):
    '''Loads the test split behind the harness's back.'''
    name = "peeks"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        load_dataset("digits")
        return DefenseOutcome()


class Random(Defender):
    '''Uses global randomness instead of its generator.'''
    name = "random"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(random.random())
        return DefenseOutcome(model=model)


class Slow(Defender):
    '''Takes too long.'''
    name = "slow"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        time.sleep(30)
        return DefenseOutcome()


class WrongType(Defender):
    '''Returns a dict.'''
    name = "wrong_type"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        return {"model": model}


class Mutates(Defender):
    '''Writes into the clean split it was given... and returns nothing useful.'''
    name = "mutates"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        ctx.clean.x.zero_()
        return DefenseOutcome()


class NoPaper(Defender):
    '''Forgets its provenance.'''
    name = "no_paper"
    version = "1"
    paper = ""

    def run(self, model, ctx):
        return DefenseOutcome()


class HostNoise(Defender):
    '''Fine-tunes on noisy inputs, but draws the noise on the host and never moves it.'''
    name = "host_noise"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        noise = torch.rand(ctx.clean.x.shape, generator=ctx.generator)
        model(ctx.clean.x + 0.01 * noise)
        return DefenseOutcome(model=model)


class MovedNoise(Defender):
    '''The same, with the draw moved to the job's device.'''
    name = "moved_noise"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        noise = torch.rand(ctx.clean.x.shape, generator=ctx.generator).to(ctx.device)
        model(ctx.clean.x + 0.01 * noise)
        return DefenseOutcome(model=model)


class HostModule(Defender):
    '''Stacks a new layer on the model, built on the host and never moved.'''
    name = "host_module"
    version = "1"
    paper = "none"

    def run(self, model, ctx):
        head = torch.nn.Linear(ctx.task.num_classes, ctx.task.num_classes)
        head(model(ctx.clean.x))
        return DefenseOutcome()


class NotAStrategy:
    pass
"""


@pytest.fixture(scope="module")
def broken_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "broken_defenses.py"
    path.write_text(textwrap.dedent(BROKEN))
    return path


@pytest.mark.parametrize(
    "cls, failing, text",
    [
        ("Peeks", "information boundary", "loaded a dataset"),
        ("Random", "deterministic under a seed", "different"),
        ("Slow", "time budget", "time budget"),
        ("WrongType", "runs on tiny data and returns a valid DefenseOutcome", "not a DefenseOutcome"),
        ("NoPaper", "metadata", "paper"),
        ("NotAStrategy", "metadata", "not a subclass"),
        # on a CPU-only machine these run fine; the fake device (arena.device.DeviceGuard) fails
        # them as a GPU would
        ("HostNoise", "keeps its tensors on the job's device", "mixes a tensor made on the host"),
        ("HostModule", "keeps its tensors on the job's device", "linear"),
    ],
)
def test_the_contract_says_plainly_what_is_wrong(broken_file, cls, failing, text):
    results = check("defender", f"{broken_file}:{cls}", time_budget_s=3)
    bad = [c for c in results if not c.ok]
    assert bad and bad[0].name == failing and text in bad[0].detail


def test_a_strategy_that_moves_its_draws_to_the_device_passes_the_fake_device(broken_file):
    results = check("defender", f"{broken_file}:MovedNoise", time_budget_s=10)
    assert all(c.ok for c in results), [(c.name, c.detail) for c in results if not c.ok]


def test_a_hook_writing_into_its_clean_split_cannot_corrupt_the_callers(broken_file):
    results = check("defender", f"{broken_file}:Mutates", time_budget_s=10)
    assert all(c.ok for c in results)  # the hook got a private copy


# ---------------------------------------------------------------------------------------------
# The adversarial contract (issue 17): the red team of tests/fixture_plugins/arena_redteam.py


def test_the_check_reports_each_thing_the_spy_reached_for(redteam):
    results = {c.name: c for c in check("defender", "arena_redteam/spy", time_budget_s=30)}
    reached = results["stays inside its row"]
    assert not reached.ok
    assert "gc.get_objects" in reached.detail and "sys._getframe" in reached.detail
    assert all(c.ok for name, c in results.items() if name != "stays inside its row")


def test_the_check_fails_a_filter_that_learns_across_batches(redteam):
    results = check("defender", "arena_redteam/remembering_filter", time_budget_s=30)
    bad = [c for c in results if not c.ok]
    assert bad and ("gave no answer" in bad[0].detail or "depend on the batch" in bad[0].detail), [(c.name, c.detail) for c in bad]


def test_a_well_behaved_defense_reaches_for_nothing():
    results = {c.name: c for c in check("defender", "strip")}
    assert results["stays inside its row"].ok and results["input filter judges each input alone"].ok


EXITS_ON_IMPORT = """
import os

os._exit(0)
"""

CRASHES_ON_IMPORT = """
import ctypes

ctypes.string_at(0)
"""


@pytest.mark.parametrize("source, how", [(EXITS_ON_IMPORT, "exit code 0"), (CRASHES_ON_IMPORT, "signal SIGSEGV")])
def test_a_module_that_exits_or_crashes_on_import_fails_the_check(tmp_path, source, how):
    path = tmp_path / "hostile.py"
    path.write_text(source)
    results = check("defender", f"{path}:Anything")
    assert len(results) == 1 and results[0].name == "imports cleanly in the sandbox" and not results[0].ok
    assert how in results[0].detail
