"""Content-addressed artifact store: safetensors blobs named by SHA-256, JSON manifests, verified on load.

Layout under ARENA_HOME:
    blobs/<sha256>.safetensors   the weights, named by the hash of their bytes
    models/<spec key>.json       manifest: the blob's sha256, the spec, the triggers, provenance
    key                          the home's secret (32 random bytes, mode 0600)
No pickle is ever read from disk.

The store is the driver's alone (docs/design.md §4): strategies run sandboxed without it. And
what a sandbox cannot stop (a weaker sandbox mode, a user's script, another program) is caught:
every manifest carries an HMAC-SHA256, under the home's key, of everything it records (the
trigger records, the target, the weights' SHA-256), so an edited target, an emptied trigger
list, or a blob rewritten together with its recorded hash is refused on load, with the file
named. The key never enters a sandbox; whoever can read it can forge, as with any MAC.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from arena.errors import ArtifactIntegrityError, StoreError, UsageError

MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KiB; a larger one is refused unread


def arena_home() -> Path:
    """All arena state lives here: $ARENA_HOME, else the per-user cache directory."""
    if os.environ.get("ARENA_HOME"):
        return Path(os.environ["ARENA_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "arena"


def atomic_write(path: Path, data: bytes) -> None:
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

    def _key(self) -> bytes:
        """The home's secret, made on first use (exclusively, so two processes agree on it)."""
        path = self.root / "key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        for _ in range(50):  # a key another process is writing right now
            try:
                key = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"Cannot read the store's key {path} ({exc.strerror or exc}); the home's files must be readable by arena.") from None
            if len(key) == 32:
                return key
            time.sleep(0.05)
        raise StoreError(f"The store's key {path} is damaged ({len(key)} bytes, not 32): no manifest of this home can be trusted. Remove the home's models/ folder and {path} to start afresh.")

    def _mac(self, manifest: dict[str, Any]) -> str:
        body = json.dumps({k: v for k, v in manifest.items() if k != "hmac"}, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key(), body, hashlib.sha256).hexdigest()

    def secret_tag(self, text: str) -> str:
        """An HMAC of `text` under the home's key: a value the evaluator can derive and no
        strategy can (e.g. the order a filter is asked in)."""
        return hmac.new(self._key(), text.encode(), hashlib.sha256).hexdigest()

    def authenticate(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The manifest with its authentication code under this home's key (what `save` writes)."""
        return {**{k: v for k, v in manifest.items() if k != "hmac"}, "hmac": self._mac(manifest)}

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
            atomic_write(blob, data)
        full = {**manifest, "key": key, "sha256": sha, "bytes": len(data)}
        full["hmac"] = self._mac(full)
        atomic_write(self.manifest_path(key), json.dumps(full, indent=2, sort_keys=True).encode())
        return full

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        path = self.manifest_path(key)
        if not path.exists():
            return None
        remove = f"Remove {path} to have arena rebuild it."
        if not path.is_file():
            raise ArtifactIntegrityError(f"The manifest {path} is not a file; the artifact was refused. {remove}")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactIntegrityError(f"The manifest {path} is {path.stat().st_size} bytes, over the {MAX_MANIFEST_BYTES >> 20} MiB a manifest may take; refused unread. {remove}")
        try:
            manifest = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
            sha = manifest["sha256"]
            if not isinstance(sha, str) or len(sha) != 64 or manifest.get("key") != key:
                raise ValueError("bad sha256 or key")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ArtifactIntegrityError(f"The manifest {path} is malformed ({str(exc)[:200]}); the artifact was refused and not loaded. {remove}") from None
        mac = manifest.get("hmac")
        if not isinstance(mac, str) or not mac.isascii() or not hmac.compare_digest(mac, self._mac(manifest)):
            what = "carries no authentication code (written by an older arena, or stripped)" if mac is None else "does not match its authentication code: it was edited after arena wrote it"
            raise ArtifactIntegrityError(
                f"The manifest {path} {what}; its trigger records and weights hash cannot be trusted, so the artifact was refused and not loaded. {remove}"
            )
        return manifest

    def held_sha256(self, key: str) -> str | None:
        """The SHA-256 of the model stored under `key`; None when there is none, or its manifest
        is refused (the attack stage that next needs it says why and rebuilds it)."""
        try:
            manifest = self.read_manifest(key)
        except ArtifactIntegrityError:
            return None
        return None if manifest is None else str(manifest["sha256"])

    def verified_blob(self, sha: str) -> bytes:
        """The bytes of blob `sha`, checked against their name."""
        data = self.blob_path(sha).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise ArtifactIntegrityError(
                f"Refused the weights {self.blob_path(sha)}: their SHA-256 is not the one they are stored under (corrupted or tampered with). Delete the file to have arena retrain them."
            )
        return data

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


@contextlib.contextmanager
def home_lock(root: Path, what: str) -> Iterator[None]:
    """Hold the home's lock for `what` (a tournament), or refuse at once when another process
    holds it: two tournaments on one home would train and play the same cells twice."""
    import fcntl

    path = root / "tournament.lock"
    root.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UsageError(
                f"Another tournament is running on this home ({holder}; lock {path}). Two on one ARENA_HOME would do the same work twice: wait for it to finish, "
                "or give this one another ARENA_HOME."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, {what}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
