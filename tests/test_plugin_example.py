"""The example plugin package under examples/ installs with pip and is found through its entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arena.registry import DEFENDERS

EXAMPLE = Path(__file__).parents[1] / "examples" / "arena-squeeze-defense"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    DEFENDERS.refresh()
    yield target
    sys.path.remove(str(target))
    DEFENDERS.refresh()
    for name in [m for m in sys.modules if m.startswith("arena_squeeze")]:
        del sys.modules[name]


def test_the_installed_plugin_is_listed_as_package_slash_name(installed, capsys):
    from arena.cli import main

    assert "arena_squeeze/squeeze_inputs" in DEFENDERS.names()
    assert main(["list", "defenders", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["defenders"]}
    assert rows["arena_squeeze/squeeze_inputs"]["version"] == "1" and "Feature Squeezing" in rows["arena_squeeze/squeeze_inputs"]["paper"]


def test_the_plugin_passes_the_contract_and_plays_a_match(installed, arena_home):
    from arena.contract import check
    from arena.match import prepare, run_match

    assert all(c.ok for c in check("defender", "arena_squeeze/squeeze_inputs"))

    def play(**params):
        return run_match(prepare("badnets", "arena_squeeze/squeeze_inputs", defender_params=params, epochs=5)).to_json()

    result = play(bits="2")
    assert result["defender"] == {"name": "arena_squeeze/squeeze_inputs", "version": "1", "params": {"bits": 2, "window": 3}}
    # Squeezing removes the checkerboard patch before the model sees it, at a clean-accuracy cost
    # (the 3x3 median also blurs the 8x8 digits).
    attacked, defended = result["attacked"], result["defended"]
    assert attacked["asr"] > 0.9 and defended["asr"] < 0.1
    assert defended["ca"] > attacked["ca"] - 0.2
    # the median filter is what removes it: bit-depth reduction alone leaves the backdoor whole
    assert play(bits=2, window=1)["defended"]["asr"] > 0.9


def test_the_plugins_own_test_suite_runs_arenas_contract(installed):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(installed)},
        cwd=EXAMPLE,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
