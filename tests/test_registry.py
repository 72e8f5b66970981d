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
