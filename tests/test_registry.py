import textwrap

import pytest

from arena.errors import UnknownNameError
from arena.params import Space
from arena.protocol import DefenseOutcome
from arena.registry import (
    ATTACKERS,
    DEFENDERS,
    PluginLoadError,
    RegistrationError,
    StrategyRegistry,
)
from arena.strategy import Defender


def _defender(name, version="1"):
    return type("D", (Defender,), {"name": name, "version": version, "paper": "p", "space": Space(), "run": lambda self, m, c: DefenseOutcome()})


def test_builtins_are_registered():
    assert {"none", "badnets", "pruning_aware"} <= set(ATTACKERS.names())
    assert {"none", "fine_tuning", "pruning", "fine_pruning"} <= set(DEFENDERS.names())


def test_duplicate_names_raise():
    registry = StrategyRegistry("defender", "Defender", "defenders", "arena.test-none")
    registry._builtins_loaded = True
    registry.register(_defender("same"))
    with pytest.raises(RegistrationError, match="duplicate"):
        registry.register(_defender("same"))


@pytest.mark.parametrize("bad", [{"name": "Bad Name"}, {"version": ""}, {"paper": None}])
def test_incomplete_metadata_is_refused_at_registration(bad):
    cls = _defender("ok")
    for k, v in bad.items():
        setattr(cls, k, v)
    with pytest.raises(RegistrationError):
        StrategyRegistry("defender", "Defender", "defenders", "arena.test-none").validate(cls)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownNameError) as info:
        DEFENDERS.get("fine_prunning")
    assert "fine_pruning" in info.value.suggestions
    assert "Did you mean 'fine_pruning'" in str(info.value)


def _install_fake_distribution(root, dist, entry_points, module_source):
    """A distribution as pip would leave it: a module plus a dist-info with entry_points.txt."""
    (root / f"{dist}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[arena.defenders]\n" + "\n".join(entry_points) + "\n")


PLUGIN = """
from arena.params import Int, Space
from arena.protocol import DefenseOutcome
from arena.strategy import Defender

class Shrug(Defender):
    '''Does nothing, politely.'''
    name = "shrug"
    version = "3"
    paper = "none"
    space = Space(k=Int(1, 0, 5))

    def run(self, model, ctx):
        return DefenseOutcome()

class NotAStrategy:
    pass
"""


def test_entry_point_plugins_are_discovered_lazily_and_broken_ones_do_not_hide_others(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path,
        "arena_test_plugin",
        ["shrug = arena_test_plugin:Shrug", "broken = arena_test_plugin_missing:Thing", "wrong = arena_test_plugin:NotAStrategy"],
        PLUGIN,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    DEFENDERS.refresh()
    try:
        names = DEFENDERS.names()
        assert {"arena_test_plugin/shrug", "arena_test_plugin/broken", "arena_test_plugin/wrong", "fine_pruning"} <= set(names)
        cls = DEFENDERS.get("arena_test_plugin/shrug")
        assert cls.version == "3" and DEFENDERS.create("arena_test_plugin/shrug", {"k": "2"}).params == {"k": 2}
        with pytest.raises(PluginLoadError, match="arena_test_plugin_missing"):
            DEFENDERS.get("arena_test_plugin/broken")
        with pytest.raises(PluginLoadError, match="not a subclass"):
            DEFENDERS.get("arena_test_plugin/wrong")
        everything = DEFENDERS.all_classes()
        assert everything["arena_test_plugin/broken"] is None and everything["fine_pruning"] is not None
        assert "arena_test_plugin/broken" in DEFENDERS.plugin_errors
    finally:
        DEFENDERS.refresh()


ARCH_PLUGIN = """
from torch import nn
from arena import Architecture

def _build(task):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, task.num_classes))

WIDE = Architecture("wide_mlp", build=_build)
DIGITS_AGAIN = Architecture("badnets_cnn", build=_build)
"""


def _install_architectures(root, dist, lines):
    (root / f"{dist}.py").write_text(textwrap.dedent(ARCH_PLUGIN))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[arena.architectures]\n" + "\n".join(lines) + "\n")


def test_plain_named_plugins_clash_loudly_and_never_displace_a_built_in(tmp_path, monkeypatch):
    from arena.models import ARCHITECTURES

    _install_architectures(tmp_path, "arena_arch_one", ["wide_mlp = arena_arch_one:WIDE", "badnets_cnn = arena_arch_one:DIGITS_AGAIN"])
    _install_architectures(tmp_path, "arena_arch_two", ["wide_mlp = arena_arch_two:WIDE"])
    monkeypatch.syspath_prepend(str(tmp_path))
    ARCHITECTURES.refresh()
    try:
        with pytest.raises(PluginLoadError, match="published twice.*arena_arch_(one|two):WIDE"):
            ARCHITECTURES.get("wide_mlp")
        builtin = ARCHITECTURES.get("badnets_cnn")
        assert builtin.build is not None and builtin.build.__module__ == "arena.models"  # the built-in stays the built-in
        assert "is built in" in ARCHITECTURES.plugin_errors["badnets_cnn"]
        assert ARCHITECTURES.origin("badnets_cnn") == {"registry": "architecture", "name": "badnets_cnn", "module": "arena.models", "distribution": "arena-backdoor"}
    finally:
        ARCHITECTURES.refresh()


def test_a_plugin_origin_names_its_entry_point_module_and_distribution(tmp_path, monkeypatch):
    from arena.models import ARCHITECTURES

    _install_architectures(tmp_path, "arena_arch_one", ["wide_mlp = arena_arch_one:WIDE"])
    monkeypatch.syspath_prepend(str(tmp_path))
    ARCHITECTURES.refresh()
    try:
        assert ARCHITECTURES.origin("wide_mlp") == {"registry": "architecture", "name": "wide_mlp", "module": "arena_arch_one", "distribution": "arena_arch_one"}
    finally:
        ARCHITECTURES.refresh()


@pytest.mark.parametrize(
    "origins, message",
    [
        ("not a list", "unreadable origins"),
        ([{"registry": "architecture", "name": 3, "module": "arena.models"}], "unreadable origin"),
        ([{"registry": "nonsense", "name": "x", "module": "arena.models"}], "unreadable origin"),
        ([{"registry": "architecture", "name": "x", "module": "tabnanny", "distribution": "evil"}], "not an installed entry point"),
        ([{"registry": "architecture", "name": "gone", "module": "arena.no_such_module", "distribution": "arena-backdoor"}], "cannot load.*ModuleNotFoundError"),
        ([{"registry": "architecture", "name": "gone", "module": "arena.models", "distribution": "arena-backdoor"}], "cannot load.*Unknown architecture 'gone'"),
    ],
)
def test_a_manifest_origin_that_cannot_be_honoured_is_a_clear_error_and_imports_nothing_foreign(origins, message):
    import sys

    from arena.errors import ArenaError
    from arena.models import ARCHITECTURES
    from arena.registry import load_origins

    sys.modules.pop("tabnanny", None)
    with pytest.raises(ArenaError, match=message):
        load_origins(origins, {"architecture": ARCHITECTURES}, "The attacked model abc")
    assert "tabnanny" not in sys.modules  # a manifest cannot make the evaluator import an arbitrary module


def test_an_attacker_whose_trigger_cannot_be_rebuilt_is_refused_before_it_is_stored():
    import torch

    from arena.data import load_dataset, player_splits
    from arena.errors import StrategyError
    from arena.match import task_for
    from arena.models import build_model
    from arena.protocol import AllToOne, AttackOutput, Trigger
    from arena.strategy import Attacker

    class Unregistered(Trigger):
        kind = "unregistered_kind"

        def __init__(self):
            self.name, self.goal = "u", AllToOne(0)

        def apply(self, x):
            return x

        def to_dict(self):
            return {"kind": self.kind, "name": self.name}

        @classmethod
        def from_dict(cls, data):
            return cls()

    class Sloppy(Attacker):
        name, version, paper = "sloppy", "1", "test double"

        def run(self, ctx):
            return AttackOutput(build_model(ctx.task, ctx.generator), [Unregistered()])

    task = task_for("digits", "badnets_cnn", 1)
    data = player_splits(load_dataset("digits"), 0.05).attacker
    with pytest.raises(StrategyError, match="'unregistered_kind' that cannot be rebuilt.*register its class"):
        Sloppy().attack(task, data, torch.Generator().manual_seed(0))
