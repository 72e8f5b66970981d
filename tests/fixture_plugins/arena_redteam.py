"""A red team for the information boundary (issue 17): defenders written by someone who gains
from a good score. Each tries a way a plugin author could cheat; against a sound harness each
scores like the defender `none`, or fails its cell with the reason, and changes nothing else.

- `Spy` looks for the secrets of the match it plays: the triggers and the test split in the
  process's objects (`gc`) and in the calling frames; its own manifest under ARENA_HOME (found
  by hashing the weights it was given), the results database, the environment. Whatever trigger
  record it finds it turns into a filter that rejects the inputs already carrying that trigger.
- `StatefulFilter` remembers the first batch it is asked about and rejects every other input:
  against an evaluator that shows it the clean test inputs first, that is ASR 0 at no CA cost.
- `RememberingFilter` keeps every batch in a file of its scratch folder (a file outlives a fork),
  pairs each input with its twin from an earlier batch and learns the trigger from their difference.
- `Forger` tries to rewrite the store: empty the trigger records of every manifest, rewrite a
  blob together with its recorded hash, and set every result row's utility to -9.
"""

from __future__ import annotations

import gc
import glob
import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from torch import nn

from arena import Defender, DefenseOutcome, InputFilter, Space

WHERE = ("/tmp/pytest-of-*/pytest-*/*", "/tmp/*", "/tmp/*/*", "~/.cache/arena", "/root/.cache/arena")


def homes() -> list[Path]:
    """Every arena state folder this process can find: the environment's, the default, and any
    folder with a models/ directory under the usual temporary places. (A test double: it keeps
    to the homes of arena's red-team tests, whose names say so, so that running the tests on a
    developer's machine cannot damage the developer's other homes.)"""
    found = [os.environ.get("ARENA_HOME", "")] + [p for pattern in WHERE for p in glob.glob(os.path.expanduser(pattern))]
    return [Path(p) for p in dict.fromkeys(found) if p and "redteam" in p and (Path(p) / "models").is_dir()]


def weights_sha256(model: nn.Module) -> str:
    return hashlib.sha256(st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})).hexdigest()


def leaked_triggers(model: nn.Module) -> list[dict]:
    """Trigger records of the model being defended, by any route that works."""
    records: list[dict] = []
    # 1. the process's objects: trigger objects, or attack records holding their JSON forms
    from arena.protocol import Trigger

    for obj in gc.get_objects():
        if isinstance(obj, Trigger):
            records.append(obj.to_dict())
        elif type(obj).__name__ == "AttackRecord":
            records.extend(getattr(obj, "triggers", ()))
    # 2. the calling frames' locals
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, Trigger):
                records.append(value.to_dict())
        frame = frame.f_back
    # 3. the store: the manifest whose weights are these
    sha = weights_sha256(model)
    for home in homes():
        for path in (home / "models").glob("*.json"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if manifest.get("sha256") == sha:
                records.extend(manifest.get("triggers", []))
        # 4. the results database names every match's targets
        with_db = home / "results.sqlite"
        if with_db.exists():
            try:
                sqlite3.connect(with_db).execute("select count(*) from sqlite_master").fetchall()
            except sqlite3.Error:
                pass
    return [r for r in records if isinstance(r, dict) and r.get("kind")]


class _AlreadyTriggered(InputFilter):
    """Rejects an input that the leaked trigger leaves unchanged: it carries the trigger already."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from arena.triggers import trigger_from_dict

        accepted = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for record in self.records:
            again = trigger_from_dict(record).apply(x)
            accepted &= ~((again - x).flatten(1).abs().amax(dim=1) < 1e-6)
        return accepted


class Spy(Defender):
    """Looks for the match's triggers through objects, frames, files and the database, and filters with them."""

    name = "spy"
    version = "1"
    paper = "red team (tests only)"
    space = Space()

    def run(self, model, ctx):  # type: ignore[no-untyped-def]
        records = leaked_triggers(model)
        return DefenseOutcome(input_filter=_AlreadyTriggered(records)) if records else DefenseOutcome()


class _FirstBatch(InputFilter):
    def __init__(self) -> None:
        self.first: torch.Tensor | None = None

    def remembered(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.first is None:
            self.first = x.clone()
        return self.first

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        first = self.remembered(x)
        assert first is not None
        seen = {bytes(v.cpu().numpy().tobytes()) for v in first}
        return torch.tensor([bytes(v.cpu().numpy().tobytes()) in seen for v in x], dtype=torch.bool, device=x.device)


class StatefulFilter(Defender):
    """Accepts only the inputs of the first batch it is asked about."""

    name = "stateful_filter"
    version = "1"
    paper = "red team (tests only)"
    space = Space()

    def run(self, model, ctx):  # type: ignore[no-untyped-def]
        return DefenseOutcome(input_filter=_FirstBatch())


class _PairFinder(InputFilter):
    """Keeps every batch it is asked about in a file (which outlives a fork of its process) and,
    once an input's twin has been seen in an earlier batch (the same image, clean in one and
    triggered in the other), learns the trigger from the pixels the twins differ in, and rejects
    the inputs that carry it."""

    def accept(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / "batches.pt"
        seen = torch.load(path) if path.exists() else x[:0].cpu()
        torch.save(torch.cat([seen, x.cpu()]), path)
        accepted = torch.ones(len(x), dtype=torch.bool)
        if not len(seen):
            return accepted.to(x.device)
        flat, old = x.cpu().flatten(1), seen.flatten(1)
        distance, nearest = torch.cdist(flat, old, p=1).min(dim=1)
        twins = (distance > 0) & (distance < 0.1 * flat.shape[1])
        if int(twins.sum()) < 10:
            return accepted.to(x.device)
        a, b = flat[twins], old[nearest[twins]]
        trigger_pixels = (a != b).float().mean(dim=0) > 0.5
        mine, theirs = a[:, trigger_pixels], b[:, trigger_pixels]
        pattern = (mine if mine.std(dim=0).mean() < theirs.std(dim=0).mean() else theirs).mode(dim=0).values
        carries = (flat[:, trigger_pixels] - pattern).abs().amax(dim=1) < 1e-4
        return (~carries).to(x.device)


class RememberingFilter(Defender):
    """Learns the trigger by pairing each input with its twin from an earlier batch, remembered on disk."""

    name = "remembering_filter"
    version = "1"
    paper = "red team (tests only)"
    space = Space()

    def run(self, model, ctx):  # type: ignore[no-untyped-def]
        return DefenseOutcome(input_filter=_PairFinder())


class Forger(Defender):
    """Rewrites whatever of the store and the results it can reach, then deploys as is."""

    name = "forger"
    version = "1"
    paper = "red team (tests only)"
    space = Space()

    def run(self, model, ctx):  # type: ignore[no-untyped-def]
        for home in homes():
            for path in (home / "models").glob("*.json"):
                try:
                    manifest = json.loads(path.read_text())
                    manifest["triggers"] = []
                    blob = home / "blobs" / f"{manifest['sha256']}.safetensors"
                    data = st_save({k: torch.zeros_like(v).contiguous() for k, v in model.state_dict().items()})
                    sha = hashlib.sha256(data).hexdigest()
                    (home / "blobs" / f"{sha}.safetensors").write_bytes(data)
                    manifest["sha256"] = sha
                    path.write_text(json.dumps(manifest))
                    del blob
                except (OSError, ValueError, KeyError):
                    pass
            try:
                with sqlite3.connect(home / "results.sqlite") as db:
                    db.execute("update matches set result = json_set(result, '$.utility', -9)")
            except sqlite3.Error:
                pass
        return DefenseOutcome()
