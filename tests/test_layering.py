"""Layering (docs/design.md §2): strategies share mechanisms through arena/'s library modules, never
through each other.

A strategy module that imports another makes the second's code part of the first's behaviour
without being part of its fingerprint or its version, and ties two strategies that the
tournament treats as independent. The package `__init__.py` files, which import every module to
register it, are the only exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("attackers", "defenders", "arena.attackers", "arena.defenders")  # the strategy packages, at the top level or under arena


def _is_strategy(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def _imported(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `tree`, relative ones resolved against `package`, and of
    every import_module / __import__ call with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)] if node.level - 1 <= len(parts) else []
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from attackers import badnets` (or `from arena import defenders`) names a module in its alias
            found += [(node.lineno, module if _is_strategy(module) and module not in FORBIDDEN else f"{module}.{alias.name}".lstrip(".")) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id if isinstance(node.func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return sorted(set(found))


def strategy_modules(root: Path) -> list[Path]:
    """The strategy modules under `root`, package `__init__.py` files aside."""
    return [path for package in FORBIDDEN for path in sorted(root.joinpath(*package.split(".")).rglob("*.py")) if path.name != "__init__.py"]


def strategy_cross_imports(root: Path) -> list[str]:
    """'path:line imports module' for every strategy module under `root` that imports a strategy module."""
    offences = []
    for path in strategy_modules(root):
        package = ".".join(path.relative_to(root).parent.parts)
        for line, module in _imported(ast.parse(path.read_text(), str(path)), package):
            if _is_strategy(module):
                offences.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
    return offences


def test_no_strategy_module_imports_another():
    scanned = {path.parent.name for path in strategy_modules(ROOT)}
    assert scanned == {"attackers", "defenders"} and len(strategy_modules(ROOT)) > 15, "the strategy packages moved: point the check at them"
    offences = strategy_cross_imports(ROOT)
    assert not offences, "strategy modules import other strategies (move the shared part into arena/):\n" + "\n".join(offences)


def test_the_check_sees_every_form_of_import(tmp_path):
    (tmp_path / "attackers").mkdir()
    (tmp_path / "defenders").mkdir()
    (tmp_path / "attackers" / "__init__.py").write_text("from attackers import a, b\n")
    (tmp_path / "attackers" / "a.py").write_text("import torch\nfrom arena.attacks import PATCH_SPACE\nfrom arena import training\n")
    (tmp_path / "attackers" / "b.py").write_text("from attackers.a import X\nfrom . import a\nfrom .a import Y\nimport defenders.c\n")
    (tmp_path / "defenders" / "c.py").write_text(
        "from defenders import d\nfrom ..attackers import a\nimport arena.defenders.x as x\nimportlib.import_module('attackers.a')\nfrom arena.attackers.y import Z\nfrom arena import defenders\n"
    )
    (tmp_path / "arena" / "defenders").mkdir(parents=True)
    (tmp_path / "arena" / "defenders" / "e.py").write_text("from arena.training import fit\nfrom . import f\nfrom ..attackers.g import H\n")
    assert strategy_cross_imports(tmp_path) == [
        "attackers/b.py:1 imports attackers.a",
        "attackers/b.py:2 imports attackers.a",
        "attackers/b.py:3 imports attackers.a",
        "attackers/b.py:4 imports defenders.c",
        "defenders/c.py:1 imports defenders.d",
        "defenders/c.py:2 imports attackers.a",
        "defenders/c.py:3 imports arena.defenders.x",
        "defenders/c.py:4 imports attackers.a",
        "defenders/c.py:5 imports arena.attackers.y",
        "defenders/c.py:6 imports arena.defenders",
        "arena/defenders/e.py:2 imports arena.defenders.f",
        "arena/defenders/e.py:3 imports arena.attackers.g",
    ]
