"""Content-addressed artifact store: safetensors blobs named by SHA-256, JSON manifests, verified on load.

Layout under ARENA_HOME:
    blobs/<sha256>.safetensors   the weights, named by the hash of their bytes
    models/<spec key>.json       manifest: the blob's sha256, the spec, the triggers, provenance
No pickle is ever read from disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from arena.errors import ArtifactIntegrityError, StoreError


def arena_home() -> Path:
    """All arena state lives here: $ARENA_HOME, else the per-user cache directory."""
    if os.environ.get("ARENA_HOME"):
        return Path(os.environ["ARENA_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "arena"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else arena_home()
        self.blobs = self.root / "blobs"
        self.models = self.root / "models"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.models.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.models, prefix=".probe.", delete=True)
            probe.close()
        except OSError as exc:
            raise StoreError(
                f"Cannot use {self.root} as the arena state directory ({exc.strerror or exc}). "
                "Set ARENA_HOME to a writable directory, e.g. `export ARENA_HOME=$HOME/.arena`."
            ) from None

    def manifest_path(self, key: str) -> Path:
        return self.models / f"{key}.json"

    def blob_path(self, sha: str) -> Path:
        return self.blobs / f"{sha}.safetensors"

    def has(self, key: str) -> bool:
        return self.manifest_path(key).exists()

    def save(self, key: str, model: nn.Module, manifest: dict[str, Any]) -> dict[str, Any]:
        """Store the model's weights and a manifest; returns the manifest written."""
        tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
        data = st_save(tensors)
        sha = hashlib.sha256(data).hexdigest()
        blob = self.blob_path(sha)
        if not blob.exists():
            _atomic_write(blob, data)
        full = {**manifest, "key": key, "sha256": sha, "bytes": len(data)}
        _atomic_write(self.manifest_path(key), json.dumps(full, indent=2, sort_keys=True).encode())
        return full

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        path = self.manifest_path(key)
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
            sha = manifest["sha256"]
            if not isinstance(sha, str) or len(sha) != 64 or manifest.get("key") != key:
                raise ValueError("bad sha256 or key")
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(
                f"The manifest {path} is malformed ({exc}); the artifact was refused and not loaded. "
                f"Remove {path} to have arena rebuild it."
            ) from None
        return manifest

    def load(self, key: str, build: Callable[[dict[str, Any]], nn.Module]) -> tuple[nn.Module, dict[str, Any]] | None:
        """The stored model for `key` (built by `build` from its manifest, weights verified), or None if absent."""
        manifest = self.read_manifest(key)
        if manifest is None:
            return None
        blob = self.blob_path(manifest["sha256"])
        if not blob.exists():
            raise ArtifactIntegrityError(
                f"The weights of artifact {key[:12]} ({blob}) are missing; its manifest "
                f"{self.manifest_path(key)} points at nothing. Remove the manifest to rebuild it."
            )
        data = blob.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest["sha256"]:
            raise ArtifactIntegrityError(
                f"Refused to load artifact {key[:12]}: {blob} has SHA-256 {actual[:16]}…, but its "
                f"manifest records {manifest['sha256'][:16]}…. The file was corrupted or tampered "
                f"with and was not loaded. Delete {blob} and {self.manifest_path(key)} to have arena "
                "train it again."
            )
        model = build(manifest)
        try:
            model.load_state_dict(st_load(data), strict=True)
        except (RuntimeError, ValueError) as exc:
            raise ArtifactIntegrityError(
                f"Artifact {key[:12]} does not fit its architecture ({str(exc).splitlines()[0]}); refused."
            ) from None
        model.eval()
        return model, manifest
