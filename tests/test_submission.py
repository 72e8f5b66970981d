"""Submitting a strategy: the bundle `arena submit` writes, and what a maintainer's refresh refuses.
The refresh that plays a bundle is in tests/test_tournament.py (it needs the module's Ray)."""

import json
import sys
import zipfile
from pathlib import Path

import pytest

from arena.registry import plugin_paths
from arena.submission import SubmissionError, build_bundle, open_bundle, sha256_file

EXAMPLE = Path(__file__).parents[1] / "examples" / "arena-squeeze-defense"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The example plugin's bundle."""
    return build_bundle(EXAMPLE, tmp_path_factory.mktemp("bundle") / "squeeze.arena-submission.zip", time_budget_s=120)


def test_the_bundle_holds_the_wheel_its_hash_and_a_passing_check_report(bundle):
    path, manifest = bundle
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(["submission.json", manifest["wheel"]])
        on_disk = json.loads(z.read("submission.json"))
    assert on_disk == manifest
    assert manifest["strategies"] == [{"kind": "defender", "name": "arena_squeeze/squeeze_inputs", "entry_point": "arena_squeeze:SqueezeInputs"}]
    checks = manifest["check"]["arena_squeeze/squeeze_inputs"]
    assert len(checks) >= 5 and all(c["ok"] for c in checks)
    assert manifest["checked_with"]["arena_version"] and len(manifest["sha256"]) == 64


def test_a_verified_bundle_installs_in_a_folder_of_its_own(bundle, tmp_path):
    path, manifest = bundle
    submission = open_bundle(path, tmp_path / "work")
    assert submission.strategies == [("defender", "arena_squeeze/squeeze_inputs")]
    assert (submission.site / "arena_squeeze" / "__init__.py").is_file()
    assert sha256_file(tmp_path / "work" / manifest["wheel"]) == manifest["sha256"]


def _rewrite(source: Path, target: Path, change) -> Path:
    with zipfile.ZipFile(source) as z:
        files = {name: z.read(name) for name in z.namelist()}
    change(files)
    with zipfile.ZipFile(target, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return target


def _altered_wheel(files):
    """The wheel with one module's code changed after the bundle was written (its hash kept)."""
    import io

    wheel_name = next(n for n in files if n.endswith(".whl"))
    src = zipfile.ZipFile(io.BytesIO(files[wheel_name]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "arena_squeeze/__init__.py":
                data += b"\nimport os  # the altered wheel reads what it should not\n"
            z.writestr(info, data)
    files[wheel_name] = out.getvalue()


def test_a_bundle_whose_wheel_was_altered_after_hashing_is_refused_and_nothing_installed(bundle, tmp_path):
    path, _ = bundle
    altered = _rewrite(path, tmp_path / "altered.zip", _altered_wheel)
    with pytest.raises(SubmissionError, match="it was altered after it was built and checked. Refused; nothing was installed or played"):
        open_bundle(altered, tmp_path / "work")
    assert not (tmp_path / "work" / "site").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update({"extra.py": b"print(1)"}), "a bundle holds submission.json and the wheel"),
        (lambda f: f.update({"submission.json": b"[1, 2]"}), "is not a JSON object"),
        (lambda f: f.update({"submission.json": json.dumps({**json.loads(f["submission.json"]), "wheel": "../evil.whl"}).encode()}), "is not a plain .whl file name"),
        (lambda f: f.update({"submission.json": json.dumps({**json.loads(f["submission.json"]), "check": {}}).encode()}), "does not pass every check"),
        (lambda f: f.pop("submission.json"), "has no submission.json"),
    ],
)
def test_a_bundle_that_is_not_one_is_refused_with_its_reason(bundle, tmp_path, change, message):
    path, _ = bundle
    with pytest.raises(SubmissionError, match=message.replace(".", r"\.").replace("(", r"\(")):
        open_bundle(_rewrite(path, tmp_path / "b.zip", change), tmp_path / "work")


def test_the_cli_refuses_a_bad_bundle_or_package_in_one_paragraph(tmp_path, capsys, arena_home):
    from arena.cli import main

    (tmp_path / "not-a-zip.zip").write_text("hello")
    (tmp_path / "suite.yaml").write_text(json.dumps({"name": "s", "dataset": "digits", "seeds": [0], "attackers": ["none"], "defenders": ["none"]}))
    assert main(["leaderboard", "refresh", str(tmp_path / "suite.yaml"), "--submission", str(tmp_path / "not-a-zip.zip")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable submission bundle" in err and "Traceback" not in err
    assert main(["submit", str(tmp_path)]) == 2
    assert "is not a Python package folder" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_a_package_whose_strategy_fails_a_check_gets_no_bundle(tmp_path):
    package = tmp_path / "arena-broken"
    (package / "arena_broken").mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n[project]\nname = "arena-broken"\nversion = "0.1.0"\n\n'
        '[project.entry-points."arena.defenders"]\nbroken = "arena_broken:Broken"\n\n[tool.setuptools]\npackages = ["arena_broken"]\n'
    )
    (package / "arena_broken" / "__init__.py").write_text(
        "from arena import Defender, Space\n\n\nclass Broken(Defender):\n    name = 'broken'\n    version = '1'\n    paper = 'none'\n"
        "    deviations = 'none'\n    space = Space()\n\n    def run(self, model, ctx):\n        raise RuntimeError('this defense always fails')\n"
    )
    with pytest.raises(SubmissionError, match="check\\(s\\) failed, so no bundle was written: arena_broken/broken"):
        build_bundle(package, tmp_path / "b.zip", time_budget_s=60)
    assert not (tmp_path / "b.zip").exists() and not (tmp_path / "b.zip.part").exists()
    assert plugin_paths() == () and "arena_broken" not in sys.modules  # the checked folder left the path with its temporary directory
