import os

import pytest
import torch

from arena.errors import ArtifactIntegrityError, StoreError
from arena.models import build_model
from arena.protocol import TaskSpec
from arena.store import ArtifactStore

TASK = TaskSpec("digits", 10, (1, 8, 8), "badnets_cnn", 1)


def _model():
    return build_model(TASK, torch.Generator().manual_seed(1))


def test_round_trip_restores_the_exact_weights(tmp_path):
    store = ArtifactStore(tmp_path)
    model = _model()
    manifest = store.save("k1", model, {"note": "x"})
    loaded, got = store.load("k1", lambda _: build_model(TASK))
    assert got["sha256"] == manifest["sha256"] and got["note"] == "x"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert store.load("absent", lambda _: build_model(TASK)) is None


def test_a_flipped_byte_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    manifest = store.save("k1", _model(), {})
    blob = store.blob_path(manifest["sha256"])
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="tampered"):
        store.load("k1", lambda _: build_model(TASK))
    assert blob.exists() and store.manifest_path("k1").exists()  # refused, not deleted


def test_a_malformed_manifest_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save("k1", _model(), {})
    store.manifest_path("k1").write_text("{not json")
    with pytest.raises(ArtifactIntegrityError, match="malformed"):
        store.load("k1", lambda _: build_model(TASK))


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save("k1", _model(), {})
    other = TaskSpec("digits", 3, (1, 8, 8), "badnets_cnn", 1)
    with pytest.raises(ArtifactIntegrityError, match="does not fit"):
        store.load("k1", lambda _: build_model(other))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_home_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    with pytest.raises(StoreError, match="ARENA_HOME"):
        ArtifactStore(tmp_path / "sub")


def test_home_that_is_a_file_is_a_clear_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(StoreError, match="ARENA_HOME"):
        ArtifactStore(path)
