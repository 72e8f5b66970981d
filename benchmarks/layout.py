"""The shape of the code at a git revision: lines per module and the longest functions.

    python benchmarks/layout.py REV [REV ...] [--out benchmarks/results/layout.json]

For each revision: every Python module under arena/, attackers/ and defenders/ with its line
count, and the longest functions (by lines from `def` to the function's last line, AST). The
issue note of the redesign compares the revision before it with the one after.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path
from typing import Any

ROOTS = ("arena", "attackers", "defenders")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def layout(rev: str, top: int = 8) -> dict[str, Any]:
    files = [f for f in _git("ls-tree", "-r", "--name-only", rev, *ROOTS).split() if f.endswith(".py")]
    modules: dict[str, int] = {}
    functions: list[tuple[int, str]] = []
    for path in files:
        text = _git("show", f"{rev}:{path}")
        modules[path] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                functions.append((node.end_lineno - node.lineno + 1, f"{path}:{node.name}"))
    functions.sort(reverse=True)
    return {
        "rev": rev,
        "commit": _git("rev-parse", rev).strip(),
        "modules": dict(sorted(modules.items(), key=lambda kv: -kv[1])),
        "total_lines": sum(modules.values()),
        "module_count": len(modules),
        "longest_functions": [{"function": name, "lines": n} for n, name in functions[:top]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/layout.json"))
    args = parser.parse_args()
    shapes = [layout(rev) for rev in args.revs]
    args.out.write_text(json.dumps(shapes, indent=1) + "\n")
    for shape in shapes:
        print(f"{shape['rev']} ({shape['commit'][:7]}): {shape['module_count']} modules, {shape['total_lines']} lines")
        for path, n in list(shape["modules"].items())[:10]:
            print(f"  {n:5d}  {path}")
        for f in shape["longest_functions"][:5]:
            print(f"  longest: {f['lines']:4d} lines  {f['function']}")


if __name__ == "__main__":
    main()
