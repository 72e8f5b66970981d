"""The public API: what a plugin imports, and only from `arena`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import arena

EXAMPLE = Path(__file__).parents[1] / "examples" / "arena-squeeze-defense"


def test_every_public_name_resolves_to_the_library_object():
    from arena.params import Space
    from arena.strategy import Defender
    from arena.training import fit

    assert arena.Defender is Defender and arena.Space is Space and arena.fit is fit
    assert set(arena.__all__) == set(arena._WHERE) | {"__version__"}  # the list and the loader agree
    for name in arena.__all__:
        assert getattr(arena, name) is not None


def test_importing_arena_alone_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import arena, sys; print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_example_plugin_imports_nothing_of_arena_but_its_public_api():
    for path in EXAMPLE.rglob("*.py"):
        if "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                assert top not in ("attackers", "defenders"), f"{path} imports a built-in strategy module"
                assert not node.module.startswith("arena."), f"{path} imports {node.module}, not the public `arena`"
