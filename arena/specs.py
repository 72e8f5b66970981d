"""Frozen, hashable, JSON round-trippable specs; their hashes key the artifact and result stores."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


# Seeds a user gives (a match's, a suite's, a search's) are unsigned 32-bit integers: the range
# numpy's and most tools' seeding accepts, so a run can be reproduced with them outside arena too.
SEED_BOUND = 2**32


def seed_problem(seed: object) -> str | None:
    """Why `seed` is not a usable seed (a sentence fragment), or None when it is."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"a seed must be an integer, got {seed!r}"
    if not 0 <= seed < SEED_BOUND:
        return f"a seed must be in [0, 2**32) = [0, {SEED_BOUND - 1}], got {seed}"
    return None


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from the match seed and a purpose, so every generator is local and reproducible."""
    return int(digest([seed, *parts])[:15], 16)


@dataclass(frozen=True)
class StrategySpec:
    """A strategy configuration: registry name, version, and its full (validated) parameters."""

    name: str
    version: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, name: str, version: str, params: dict[str, Any]) -> StrategySpec:
        return cls(name, version, tuple(sorted(params.items())))

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.param_dict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StrategySpec:
        return cls.of(data["name"], data["version"], data["params"])


@dataclass(frozen=True)
class AttackSpec:
    """Everything the attacked model depends on: the attacker half of a match."""

    attacker: StrategySpec
    dataset: str
    architecture: str
    epochs: int
    clean_budget: float  # decides which samples the attacker does not get
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "attacker": self.attacker.to_dict(),
            "dataset": self.dataset,
            "architecture": self.architecture,
            "epochs": self.epochs,
            "clean_budget": self.clean_budget,
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        return digest(self.to_dict())


@dataclass(frozen=True)
class MatchSpec:
    attack: AttackSpec
    defender: StrategySpec

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack.to_dict(), "defender": self.defender.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatchSpec:
        a = data["attack"]
        attack = AttackSpec(
            StrategySpec.from_dict(a["attacker"]), a["dataset"], a["architecture"], int(a["epochs"]), float(a["clean_budget"]), int(a["seed"])
        )
        return cls(attack, StrategySpec.from_dict(data["defender"]))

    @property
    def key(self) -> str:
        return digest(self.to_dict())
