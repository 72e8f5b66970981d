"""The information boundary of docs/design.md §1 against a hostile plugin (issue 17).

The red team is `tests/fixture_plugins/arena_redteam.py`: a spy (objects, frames, files,
environment, database), a filter that remembers its first batch (in memory, and on disk), and a
forger of the store. In the sandbox each scores like the defender `none`, or fails its cell with
the reason, and changes nothing else; the positive controls show each cheat working where the
boundary is not (the weaker `process` mode, or a filter asked the naive way).
"""

import dataclasses
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import ray_with_plugins

from arena.data import load_dataset
from arena.errors import ArtifactIntegrityError, StrategyError, UsageError
from arena.evaluator import FilterInconsistent
from arena.match import prepare, run_match
from arena.protocol import DefenseOutcome, Goal, Trigger
from arena.registry import DEFENDERS
from arena.results import ResultsStore
from arena.sandbox import SandboxedFailure, sandbox_mode
from arena.store import ArtifactStore, home_lock
from arena.strategy import Defender, DefenseContext
from arena.suite import parse_suite
from arena.tournament import run_tournament

needs_bwrap = pytest.mark.skipif(sandbox_mode() != "bwrap", reason="bubblewrap cannot make a sandbox on this machine (arena doctor says why)")


def play(defender, home, sandbox=None, **kwargs):
    previous = os.environ.get("ARENA_SANDBOX")
    if sandbox:
        os.environ["ARENA_SANDBOX"] = sandbox
    try:
        return run_match(prepare("badnets", defender, **kwargs), ArtifactStore(home)).to_json()
    finally:
        if previous is None:
            os.environ.pop("ARENA_SANDBOX", None)
        else:
            os.environ["ARENA_SANDBOX"] = previous


def snapshot(home):
    """Every file of a home with its bytes' hash, and every result row."""
    files = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.rglob("*")) if p.is_file() and p.suffix in (".json", ".safetensors")}
    db = home / "results.sqlite"
    rows = sqlite3.connect(db).execute("select suite, key, result from matches order by suite, key").fetchall() if db.exists() else []
    return files, rows


# ---------------------------------------------------------------------------------------------
# What the hook gets (the base class's contract, in-process)


class Recorder(Defender):
    """Records what its hook is given."""

    name = "recorder"
    version = "1"
    paper = "test double"
    seen: dict = {}

    def run(self, model, ctx):
        Recorder.seen = {"model": model, "ctx": ctx}
        return DefenseOutcome()


def _reachable(root, depth=6):
    """Every object reachable from root through attributes, containers and dataclass fields."""
    seen, stack, out = set(), [(root, 0)], []
    while stack:
        obj, d = stack.pop()
        if id(obj) in seen or d > depth:
            continue
        seen.add(id(obj))
        out.append(obj)
        children = []
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            children = list(obj)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        elif isinstance(obj, torch.nn.Module):
            children = list(vars(obj).values())
        stack.extend((c, d + 1) for c in children)
    return out


def test_the_hook_gets_only_task_clean_split_generator_and_model(splits):
    prepared = prepare("badnets", "none")
    from arena.models import build_model

    Recorder().defend(build_model(prepared.task), prepared.task, splits.clean, torch.Generator().manual_seed(0))
    ctx = Recorder.seen["ctx"]
    assert isinstance(ctx, DefenseContext)
    assert {f.name for f in dataclasses.fields(ctx)} == {"task", "clean", "generator", "progress"}
    assert {f.name for f in dataclasses.fields(ctx.task)} == {"dataset", "num_classes", "input_shape", "architecture", "epochs"}
    for obj in _reachable(ctx) + _reachable(Recorder.seen["model"]):
        assert not isinstance(obj, (Trigger, Goal)), obj


def test_the_clean_split_is_clean_and_disjoint_from_the_test_split(splits):
    dataset = load_dataset("digits")
    flat_train = dataset.train.x.flatten(1)
    for x, y in zip(splits.clean.x.flatten(1), splits.clean.y):
        same = torch.nonzero((flat_train == x).all(dim=1)).flatten()
        assert len(same) and bool((dataset.train.y[same] == y).any())  # an untouched training sample
    flat_test = dataset.test.x.flatten(1)
    assert not any(bool((flat_test == x).all(dim=1).any()) for x in splits.clean.x.flatten(1))


# ---------------------------------------------------------------------------------------------
# The red team in `arena match`


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with the badnets model, its honest baseline, and the `none` match of them."""
    home = tmp_path_factory.mktemp("redteam-home")
    baseline = play("none", home)
    return home, baseline


@needs_bwrap
def test_the_spy_finds_nothing_in_the_sandbox_and_scores_like_none(redteam, home):
    home, baseline = home
    spied = play("arena_redteam/spy", home)
    assert spied["attacked"]["asr"] > 0.9
    assert spied["defended"]["asr"] == baseline["defended"]["asr"] and spied["defended"]["ca"] == baseline["defended"]["ca"]
    assert spied["utility"] == baseline["utility"] and "frr" not in spied["defended"]  # it found no trigger, so returned no filter


def test_the_spy_reads_the_trigger_where_the_files_are_reachable(redteam, home):
    """Positive control: in the weaker `process` mode the store is on the worker's file system,
    the spy finds its model's manifest by hashing the weights, and the backdoor is gone at no
    cost. The sandbox, not the spy's clumsiness, is what stops it above."""
    home, baseline = home
    spied = play("arena_redteam/spy", home, sandbox="process")
    assert spied["defended"]["asr"] < 0.05 < 0.9 < baseline["defended"]["asr"]
    assert spied["defended"]["ca"] >= baseline["defended"]["ca"] - 0.01


def test_a_filter_that_remembers_its_first_batch_scores_like_none(redteam, home, splits):
    home, baseline = home
    remembered = play("arena_redteam/stateful_filter", home)
    assert remembered["defended"]["asr"] == baseline["defended"]["asr"] and remembered["defended"]["ca"] == baseline["defended"]["ca"]
    # positive control: asked the naive way (all clean inputs, then all triggered ones), the same
    # filter takes ASR to 0 at no CA cost
    from arena.triggers import trigger_from_dict

    record = json.loads((home / "models" / f"{prepare('badnets', 'none').spec.attack.key}.json").read_text())["triggers"][0]
    naive = DEFENDERS.get("arena_redteam/stateful_filter")().run(None, None).input_filter
    assert bool(naive.accept(None, splits.test.x).all())
    assert not bool(naive.accept(None, trigger_from_dict(record).apply(splits.test.x)).any())


def test_a_filter_that_learns_the_trigger_across_batches_fails_its_cell_with_the_reason(redteam, home, splits):
    home, _ = home
    # it cannot write its file from a fork that answers a batch (nor, before that, show answers
    # that depend on what earlier batches taught it)
    with pytest.raises(StrategyError, match="gave no answer|depend on the batch"):
        play("arena_redteam/remembering_filter", home)
    # positive control: shown one clean batch, the filter rejects the triggered copies asked next
    from arena.triggers import trigger_from_dict

    record = json.loads((home / "models" / f"{prepare('badnets', 'none').spec.attack.key}.json").read_text())["triggers"][0]
    bad = trigger_from_dict(record).apply(splits.test.x)
    os.environ["TMPDIR"], previous = str(home.parent / "pairs-scratch"), os.environ.get("TMPDIR")
    (home.parent / "pairs-scratch").mkdir(exist_ok=True)
    try:
        naive = DEFENDERS.get("arena_redteam/remembering_filter")().run(None, None).input_filter
        assert bool(naive.accept(None, splits.test.x[:500]).all())
        assert float(naive.accept(None, bad[:500]).float().mean()) < 0.05
    finally:
        os.environ.pop("TMPDIR") if previous is None else os.environ.__setitem__("TMPDIR", previous)


@needs_bwrap
def test_the_forger_changes_nothing_and_a_later_match_scores_as_before(redteam, home):
    home, baseline = home
    before = snapshot(home)
    forged = play("arena_redteam/forger", home)
    assert forged["utility"] == baseline["utility"]
    assert snapshot(home) == before
    again = play("none", home)
    assert again["cached"] and again["attacked"] == baseline["attacked"] and again["defended"] == baseline["defended"]


def test_what_the_forger_writes_where_it_can_is_refused_on_load(redteam, tmp_path_factory):
    """Positive control for the store's authentication: in `process` mode the forger does reach
    the files; every manifest it rewrote is then refused with a clear message, not used."""
    home = tmp_path_factory.mktemp("redteam-forged")
    play("none", home)
    play("arena_redteam/forger", home, sandbox="process")
    with pytest.raises(ArtifactIntegrityError, match="does not match its authentication code"):
        play("none", home)


# ---------------------------------------------------------------------------------------------
# The store's authentication and lock


@pytest.fixture
def stored(tmp_path):
    play("none", tmp_path)
    key = prepare("badnets", "none").spec.attack.key
    return tmp_path, tmp_path / "models" / f"{key}.json"


def _edit(path, change):
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m["triggers"][0]["goal"].update(target=(m["triggers"][0]["goal"]["target"] + 1) % 10), id="target edited"),
        pytest.param(lambda m: m.update(triggers=[]), id="trigger list emptied"),
        pytest.param(lambda m: m.pop("hmac"), id="authentication code stripped"),
    ],
)
def test_an_edited_manifest_is_refused_with_a_clear_message(stored, change):
    home, path = stored
    _edit(path, change)
    with pytest.raises(ArtifactIntegrityError, match=str(path)):
        play("none", home)


def test_a_blob_rewritten_with_its_recorded_hash_is_refused(stored):
    home, path = stored
    manifest = json.loads(path.read_text())
    data = (home / "blobs" / f"{manifest['sha256']}.safetensors").read_bytes().replace(b"\x3f", b"\x3e", 50)
    sha = hashlib.sha256(data).hexdigest()
    (home / "blobs" / f"{sha}.safetensors").write_bytes(data)
    _edit(path, lambda m: m.update(sha256=sha))
    with pytest.raises(ArtifactIntegrityError, match="authentication code"):
        play("none", home)


def test_a_manifest_that_is_a_directory_or_oversized_is_refused(stored):
    home, path = stored
    store = ArtifactStore(home)
    key = path.stem
    path.write_bytes(b" " * (17 << 20))
    with pytest.raises(ArtifactIntegrityError, match="over the 16 MiB"):
        store.read_manifest(key)
    path.unlink()
    path.mkdir()
    with pytest.raises(ArtifactIntegrityError, match="not a file"):
        store.read_manifest(key)


def test_a_second_tournament_on_one_home_is_refused_while_the_first_runs(tmp_path):
    with home_lock(tmp_path, "suite 'first'"):
        with pytest.raises(UsageError, match="Another tournament is running on this home .*suite 'first'"):
            with home_lock(tmp_path, "suite 'second'"):
                pass
    with home_lock(tmp_path, "suite 'third'"):  # released: the next one runs
        pass


def test_a_strategy_class_defined_in_a_function_is_a_clear_error():
    class Local(Defender):
        name = "local"
        version = "1"
        paper = "test double"

        def run(self, model, ctx):
            return DefenseOutcome()

    from arena.sandbox import StrategyRef

    with pytest.raises(UsageError, match="defined inside a function"):
        StrategyRef.of(Local, "defender")


# ---------------------------------------------------------------------------------------------
# The red team in a tournament on Ray


REDTEAM_SUITE = {
    "name": "redteam",
    "dataset": "digits",
    "epochs": 3,
    "seeds": [0],
    "attackers": ["badnets"],
    "defenders": ["none", "arena_redteam/spy", "arena_redteam/stateful_filter", "arena_redteam/remembering_filter", "arena_redteam/forger"],
}


@needs_bwrap
def test_in_a_tournament_each_scores_like_none_or_fails_its_cell_and_the_store_is_untouched(tmp_path_factory):

    with ray_with_plugins(tmp_path_factory.mktemp("redteam-tournament")) as home:
        results = ResultsStore(home / "results.sqlite")
        suite = parse_suite(REDTEAM_SUITE, "redteam")
        summary = run_tournament(suite, results)
        rows = {r["spec"]["defender"]["name"]: r for r in results.rows("redteam")}
        assert summary.ok == 4 and summary.failed == 1
        none = rows["none"]["result"]
        for name in ("arena_redteam/spy", "arena_redteam/stateful_filter", "arena_redteam/forger"):
            assert rows[name]["status"] == "ok", rows[name]["error"]
            assert rows[name]["result"]["utility"] == none["utility"], name
            assert rows[name]["result"]["defended"]["asr"] == none["defended"]["asr"] > 0.9, name
        failed = rows["arena_redteam/remembering_filter"]
        assert failed["status"] == "error" and ("gave no answer" in failed["error"] or "depend on the batch" in failed["error"])
        # a later suite on the same home reuses the models, untouched
        files, _ = snapshot(home)
        assert files and all(ArtifactStore(home).read_manifest(p.stem) for p in (home / "models").glob("*.json"))
        again = run_match(prepare("badnets", "none", epochs=3), ArtifactStore(home)).to_json()
        assert again["cached"] and again["utility"] == none["utility"]


def test_sandboxed_failures_are_strategy_errors():
    assert issubclass(SandboxedFailure, StrategyError) and issubclass(FilterInconsistent, StrategyError)


def test_arena_doctor_says_which_sandbox_is_in_force(capsys, monkeypatch):
    from arena.cli import main

    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sandbox"]["mode"] == sandbox_mode() and report["sandbox"]["mode"] in ("bwrap", "process")
    monkeypatch.setenv("ARENA_SANDBOX", "process")
    assert main(["doctor", "--json"]) == 0
    assert "can read and write the user's files" in json.loads(capsys.readouterr().out)["sandbox"]["guarantees"]
    monkeypatch.setenv("ARENA_SANDBOX", "chroot")
    assert main(["doctor"]) == 2
    assert "ARENA_SANDBOX must be one of auto, bwrap, process" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The worker's limits


class Spinner(Defender):
    """Burns CPU and never answers."""

    name = "spinner"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        while True:
            pass


class Hog(Defender):
    """Asks for far more memory than its worker may have."""

    name = "hog"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        torch.empty(4 << 30, dtype=torch.uint8).fill_(1)
        return DefenseOutcome()


def _defend_in(cls, limits, splits):
    from arena.device import CPU
    from arena.match import run_defender
    from arena.models import build_model
    from arena.sandbox import Sandbox, StrategyRef

    task = prepare("badnets", "none").task
    store = ArtifactStore(Path(tempfile.mkdtemp(prefix="limits-")))
    manifest = store.save("victim", build_model(task), {"published_architecture": task.architecture, "origins": []})
    with Sandbox(StrategyRef.of(cls, "defender"), limits) as box:
        return run_defender(box, cls(), task, store.verified_blob(manifest["sha256"]), manifest["sha256"], manifest, splits, 0, CPU, lambda *_: None)


def test_a_worker_past_its_cpu_time_is_killed_with_the_reason(splits):
    from arena.sandbox import SandboxLimits, SandboxTimeout

    with pytest.raises(SandboxTimeout, match="CPU-time limit of 3 s"):
        _defend_in(Spinner, SandboxLimits(cpu_seconds=3, wall_seconds=60), splits)


def test_a_worker_past_its_wall_time_is_killed_with_the_reason(splits):
    from arena.sandbox import SandboxLimits, SandboxTimeout

    with pytest.raises(SandboxTimeout, match="wall-clock limit of 4 s"):
        _defend_in(Spinner, SandboxLimits(cpu_seconds=60, wall_seconds=4), splits)


def test_a_worker_past_its_memory_fails_its_cell_with_the_reason(splits):
    from arena.sandbox import SandboxLimits

    with pytest.raises(SandboxedFailure, match="(?i)memory|allocat"):
        _defend_in(Hog, SandboxLimits(memory_bytes=2 << 30), splits)


def test_a_plugin_that_exits_on_import_is_refused_by_arena_match_not_obeyed(tmp_path, capsys, arena_home):
    """Without the probe, `arena match` would import the plugin and exit 0 with no result."""
    from arena.cli import main

    (tmp_path / "arena_quits.py").write_text("import os\n\nos._exit(0)\n")
    info = tmp_path / "arena_quits-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: arena_quits\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[arena.defenders]\nquits = arena_quits:Quits\n")
    sys.path.insert(0, str(tmp_path))
    DEFENDERS.refresh()
    try:
        assert main(["match", "--attacker", "badnets", "--defender", "arena_quits/quits", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "failed to import in a sandbox, so arena did not import it" in err and "exit code 0" in err
        assert "arena_quits" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
        DEFENDERS.refresh()
