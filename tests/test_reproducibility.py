"""Same spec, same bits: fixed-thread stages, recorded numerics and code fingerprints, stale
results re-run, and the verdict rule's fallback model."""

from __future__ import annotations

import json

import pytest
import torch

from arena.artifacts import fallback_key
from arena.match import attack_stage, prepare, run_match
from arena.protocol import DefenseOutcome, Verdict
from arena.provenance import STAGE_THREADS, numerics
from arena.registry import DEFENDERS
from arena.results import ResultsStore, mark_stale
from arena.store import ArtifactStore
from arena.strategy import Defender

SPEC = dict(dataset="digits", epochs=3)


@pytest.fixture
def threads():
    """Restores the test process's torch thread count after a test changes it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_the_same_spec_gives_bit_identical_weights_whatever_the_callers_thread_count(tmp_path, threads):
    spec = prepare("badnets", "none", **SPEC).spec.attack
    threads(2)
    two = attack_stage(spec, ArtifactStore(tmp_path / "two"))
    assert torch.get_num_threads() == 2  # the stage restores the caller's setting
    threads(1)
    one = attack_stage(spec, ArtifactStore(tmp_path / "one"))
    assert one.sha256 == two.sha256
    assert one.numerics == two.numerics == numerics() and one.numerics["threads"] == STAGE_THREADS


def test_side_by_side_training_gives_the_models_of_a_one_by_one_run(tmp_path, monkeypatch):
    from arena.artifacts import honest_spec
    from arena.match import train_side_by_side

    monkeypatch.setattr("arena.match.SIDE_BY_SIDE_MIN_SAMPLE_EPOCHS", 0)  # digits is below the threshold

    serial = run_match(prepare("badnets", "none", **SPEC), ArtifactStore(tmp_path / "serial")).to_json()
    # the two child processes alone put both models in the store, with the serial run's bits
    attack = prepare("badnets", "none", **SPEC).spec.attack
    store = ArtifactStore(tmp_path / "children")
    train_side_by_side({"honest": honest_spec(attack), "attack": attack}, store, max_parallel=2)
    assert store.read_manifest(attack.key)["sha256"] == serial["artifact_sha256"]
    assert store.has(honest_spec(attack).key)
    parallel = run_match(prepare("badnets", "none", **SPEC), ArtifactStore(tmp_path / "parallel"), side_by_side=True).to_json()
    assert parallel["artifact_sha256"] == serial["artifact_sha256"]
    assert parallel["honest"] == serial["honest"] and parallel["defended"] == serial["defended"]
    assert parallel["cached"] is False  # trained in this run, if in another process


def test_results_and_manifests_record_numerics_and_code_fingerprints(tmp_path):
    result = run_match(prepare("badnets", "fine_tuning", defender_params={"steps": 5}, **SPEC), ArtifactStore(tmp_path)).to_json()
    assert result["numerics"] == numerics()
    assert set(result["fingerprints"]) == {"attacker", "honest", "defender"}
    assert all(f.startswith("src:") for f in result["fingerprints"].values())
    manifest = json.loads((tmp_path / "models" / f"{prepare('badnets', 'none', **SPEC).spec.attack.key}.json").read_text())
    assert manifest["numerics"] == numerics() and manifest["fingerprint"] == result["fingerprints"]["attacker"]


def test_a_stored_model_of_other_code_or_numerics_is_retrained_not_reused(tmp_path):
    store = ArtifactStore(tmp_path)
    spec = prepare("badnets", "none", **SPEC).spec.attack
    first = attack_stage(spec, store)
    path = store.manifest_path(spec.key)
    for field, value in (("fingerprint", "src:older-code"), ("numerics", {**numerics(), "torch": "1.0"})):
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps(store.authenticate({**manifest, field: value})))  # as arena of other code or numerics wrote it
        again = attack_stage(spec, store)
        assert not again.cached and again.sha256 == first.sha256  # retrained, to the same bits
        assert attack_stage(spec, store).cached


def test_a_row_of_changed_code_is_stale_and_is_not_counted_as_finished(tmp_path):
    prepared = prepare("badnets", "fine_tuning", defender_params={"steps": 5}, **SPEC)
    result = run_match(prepared, ArtifactStore(tmp_path)).to_json()
    results = ResultsStore(tmp_path / "results.sqlite")
    results.put("s", prepared.spec, "ok", result=result)
    assert results.finished("s") == {prepared.spec.key}
    assert not mark_stale(results.frame("s")).stale.any()
    result["fingerprints"]["defender"] = "src:older-code"
    results.put("s", prepared.spec, "ok", result=result)
    marked = mark_stale(results.frame("s"))
    assert marked.stale.tolist() == [True] and "defender fine_tuning" in marked.stale_reason.iloc[0]
    assert results.finished("s") == set()


class _FlagsEverything(Defender):
    """Flags every model and returns nothing else (a verdict-only defense)."""

    name = "flags_everything"
    version = "1"
    paper = "test double"

    def run(self, model, ctx):
        return DefenseOutcome(verdict=Verdict(flagged=True, score=1.0, labels=(0,)))


class _FlagsNothing(_FlagsEverything):
    """Flags no model."""

    name = "flags_nothing"

    def run(self, model, ctx):
        return DefenseOutcome(verdict=Verdict(flagged=False, score=0.0))


@pytest.fixture
def verdict_defenders(monkeypatch):
    monkeypatch.setitem(DEFENDERS._builtins, "flags_everything", _FlagsEverything)
    monkeypatch.setitem(DEFENDERS._builtins, "flags_nothing", _FlagsNothing)


def test_a_flagged_model_without_a_repair_is_replaced_by_the_fallback(tmp_path, verdict_defenders):
    store = ArtifactStore(tmp_path)
    flagged = run_match(prepare("badnets", "flags_everything"), store)  # digits' own budget: a working fallback
    trusted = run_match(prepare("badnets", "flags_nothing"), store)
    # not flagged: the published backdoored model is deployed as is
    assert trusted.deployed == "published" and trusted.defended.asr == trusted.attacked.asr > 0.5
    # flagged: the user deploys the harness's fallback, trained on the clean split alone
    assert flagged.deployed == "fallback" and flagged.fallback_sha256
    assert flagged.defended.asr < 0.2 and flagged.defended.ca < flagged.honest_ca
    assert store.has(fallback_key(flagged.spec.attack))
    # an honest model wrongly flagged pays the same price: the same fallback, the same figures
    honest = run_match(prepare("none", "flags_everything"), store)
    assert honest.fallback_sha256 == flagged.fallback_sha256 and honest.defended.ca == flagged.defended.ca
    assert honest.utility < run_match(prepare("none", "flags_nothing"), store).utility


def test_a_code_fingerprint_ignores_documentation_and_follows_code(tmp_path):
    from arena.provenance import _source_digest

    versions = {
        "a": 'def f(x):\n    """Doubles."""\n    return 2 * x  # twice\n',
        "b": '# new comment\ndef f(x):\n    """Doubles x, now documented at length."""\n\n    return 2*x\n',
        "c": 'def f(x):\n    """Doubles."""\n    return 3 * x\n',
    }
    digests = {}
    for name, text in versions.items():
        (tmp_path / f"{name}.py").write_text(text)
        digests[name] = _source_digest(str(tmp_path / f"{name}.py"))
    assert digests["a"] == digests["b"] != digests["c"]


def test_a_fingerprint_covers_the_strategy_code_a_strategy_builds_on(tmp_path, monkeypatch):
    import importlib

    from arena.provenance import code_fingerprint, strategy_modules
    from arena.registry import ATTACKERS

    # built-ins share code only through arena's library modules, which are not part of a fingerprint
    assert strategy_modules(ATTACKERS.get("boosted")) == ["arena.attackers.boosted"]
    assert strategy_modules(DEFENDERS.get("strip")) == ["arena.defenders.strip"]
    # a plugin package whose defense subclasses another of its modules: both are covered
    package = tmp_path / "fp_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("from arena import Defender, DefenseOutcome\n\nclass Base(Defender):\n    def run(self, model, ctx):\n        return DefenseOutcome()\n")
    (package / "child.py").write_text("from fp_plugin.base import Base\n\nclass Child(Base):\n    name = 'child'\n    version = '1'\n    paper = 'p'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    child = importlib.import_module("fp_plugin.child").Child
    assert strategy_modules(child) == ["fp_plugin.base", "fp_plugin.child"]
    before = code_fingerprint(child)
    (package / "base.py").write_text((package / "base.py").read_text().replace("DefenseOutcome()", "DefenseOutcome(model=model)"))
    from arena.provenance import _source_digest

    _source_digest.cache_clear()
    assert code_fingerprint(child) != before  # a change in the module it builds on moves its fingerprint
