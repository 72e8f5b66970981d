"""Submitting a strategy: the bundle `arena submit` writes, and what a maintainer's refresh refuses.
The refresh that plays a bundle is in tests/test_tournament.py (it needs the module's Ray)."""

import hashlib
import io
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


def _edit_wheel(edit=lambda name, data: data, add=None, rehash=False):
    """A bundle change that rewrites its wheel: each member through `edit(name, data)`, the
    members of `add` appended; with `rehash`, the manifest's SHA-256 follows (an author's own
    edit: the bundle stays self-consistent), else it is kept (an alteration after hashing)."""

    def change(files):
        wheel_name = next(n for n in files if n.endswith(".whl"))
        src = zipfile.ZipFile(io.BytesIO(files[wheel_name]))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for info in src.infolist():
                z.writestr(info, edit(info.filename, src.read(info.filename)))
            for name, data in (add or {}).items():
                z.writestr(name, data)
        files[wheel_name] = out.getvalue()
        if rehash:
            manifest = json.loads(files["submission.json"])
            manifest["sha256"] = hashlib.sha256(files[wheel_name]).hexdigest()
            files["submission.json"] = json.dumps(manifest).encode()

    return change


def _altered_module(name, data):
    """One module's code changed (the altered wheel reads what it should not)."""
    return data + b"\nimport os\n" if name == "arena_squeeze/__init__.py" else data


def test_a_bundle_whose_wheel_was_altered_after_hashing_is_refused_and_nothing_installed(bundle, tmp_path):
    path, _ = bundle
    altered = _rewrite(path, tmp_path / "altered.zip", _edit_wheel(_altered_module))
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


def _failing_package(tmp_path, name):
    """A plugin package `arena-NAME` whose one defense always raises: it fails `arena check`."""
    package = tmp_path / f"arena-{name}"
    (package / f"arena_{name}").mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n[project]\nname = "arena-{name}"\nversion = "0.1.0"\n\n'
        f'[project.entry-points."arena.defenders"]\n{name} = "arena_{name}:Failing"\n\n[tool.setuptools]\npackages = ["arena_{name}"]\n'
    )
    (package / f"arena_{name}" / "__init__.py").write_text(
        f"from arena import Defender, Space\n\n\nclass Failing(Defender):\n    name = '{name}'\n    version = '1'\n    paper = 'none'\n"
        "    deviations = 'none'\n    space = Space()\n\n    def run(self, model, ctx):\n        raise RuntimeError('this defense always fails')\n"
    )
    return package


def test_a_package_whose_strategy_fails_a_check_gets_no_bundle(tmp_path):
    package = _failing_package(tmp_path, "broken")
    with pytest.raises(SubmissionError, match="check\\(s\\) failed, so no bundle was written: arena_broken/broken"):
        build_bundle(package, tmp_path / "b.zip", time_budget_s=60)
    assert not (tmp_path / "b.zip").exists() and not (tmp_path / "b.zip.part").exists()
    assert plugin_paths() == () and "arena_broken" not in sys.modules  # the checked folder left the path with its temporary directory


@pytest.mark.parametrize(
    "member, message",
    [
        ("yaml/__init__.py", "ships the top-level module 'yaml', which this environment already has"),  # would replace what arena imports
        ("json.py", "ships the top-level module 'json'"),
        ("other-1.0.egg-info/entry_points.txt", "a submission is one distribution"),  # entry points of a name not its own
        ("other-1.0.DIST-INFO/entry_points.txt", "a submission is one distribution"),  # Python's metadata lookup ignores the case
        ("yaml.cpython-311-x86_64-linux-gnu.so", "ships the top-level module 'yaml'"),  # a compiled module is a module too
        ("../../outside.py", "a path outside its own folder"),
    ],
)
def test_a_self_consistent_bundle_that_would_shadow_or_escape_is_refused(bundle, tmp_path, member, message):
    path, _ = bundle
    hostile = _rewrite(path, tmp_path / "hostile.zip", _edit_wheel(add={member: b"print('hostile')\n"}, rehash=True))
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(".", r"\.")):
        open_bundle(hostile, tmp_path / "work")
    assert not (tmp_path / "outside.py").exists() and not (tmp_path.parent / "outside.py").exists()


def test_a_damaged_zip_is_a_clear_refusal(bundle, tmp_path):
    path, _ = bundle
    data = path.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(SubmissionError, match="is not a readable submission bundle"):
        open_bundle(tmp_path / "truncated.zip", tmp_path / "w1")
    with zipfile.ZipFile(path) as z:  # the wheel's compressed bytes flipped in place: a CRC or inflate error
        info = z.getinfo(next(n for n in z.namelist() if n.endswith(".whl")))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    damaged = bytearray(data)
    damaged[start : start + 200] = bytes(b ^ 0xFF for b in damaged[start : start + 200])
    (tmp_path / "flipped.zip").write_bytes(bytes(damaged))
    with pytest.raises(SubmissionError, match="is not a readable submission bundle|altered after it was built"):
        open_bundle(tmp_path / "flipped.zip", tmp_path / "w2")


def test_a_bundle_whose_report_lies_is_checked_again_by_the_refresh_and_refused(tmp_path, capsys, arena_home):
    """The hash and the report are the author's word; the maintainer's refresh runs the check."""
    from arena.cli import main
    from arena.submission import build_wheel, sha256_file

    package = _failing_package(tmp_path, "liar")
    wheel = build_wheel(package, tmp_path / "wheel")
    manifest = {
        "format": 1, "wheel": wheel.name, "sha256": sha256_file(wheel), "size": wheel.stat().st_size,
        "strategies": [{"kind": "defender", "name": "arena_liar/liar", "entry_point": "arena_liar:Failing"}],
        "check": {"arena_liar/liar": [{"name": "runs", "ok": True, "detail": ""}]},
        "checked_with": {"arena_version": "0.1.0", "git_commit": None, "python": "3"}, "built": "2026-12-06",
    }  # fmt: skip
    assert manifest["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    with zipfile.ZipFile(tmp_path / "liar.zip", "w") as z:
        z.writestr("submission.json", json.dumps(manifest))
        z.write(wheel, wheel.name)
    (tmp_path / "suite.yaml").write_text(json.dumps({"name": "s", "dataset": "digits", "seeds": [0], "attackers": ["none"], "defenders": ["none"]}))
    assert main(["leaderboard", "refresh", str(tmp_path / "suite.yaml"), "--submission", str(tmp_path / "liar.zip"), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "liar.zip fails" in err and "check(s) here, whatever its report says" in err and "Refused; nothing was played" in err
    assert not (tmp_path / "results.csv").exists() and plugin_paths() == ()


def test_a_wheel_declaring_another_extension_point_is_refused(bundle, tmp_path):
    """Trigger kinds, architectures and datasets run in arena's own process: not a submission's."""
    path, _ = bundle

    def add_entry_point(name, data):
        return data + b"\n[arena.architectures]\nsneaky = arena_squeeze:Squeeze\n" if name.endswith("entry_points.txt") else data

    with pytest.raises(SubmissionError, match="in the entry point group 'arena.architectures'; a submission may declare attackers and defenders only"):
        open_bundle(_rewrite(path, tmp_path / "b.zip", _edit_wheel(add_entry_point, rehash=True)), tmp_path / "work")


def test_a_development_copy_on_the_path_gets_no_bundle(tmp_path, monkeypatch):
    """The check must run the wheel's code, not a copy of the package found first (pip install -e)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    with pytest.raises(SubmissionError, match="(already installed here|ships the top-level module 'arena_squeeze').*Uninstall the development copy"):
        build_bundle(EXAMPLE, tmp_path / "b.zip")
    assert not (tmp_path / "b.zip").exists()
