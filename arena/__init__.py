"""arena: a tournament harness where backdoor attacks play against defenses.

The public API for strategy authors: `from arena import Defender, Space, Float, fit, ...`.
Names load on first use, so `import arena` stays light (no torch until a name needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time they load on first use
    from arena.capabilities import BatchNormalized, HasFeatureLayers, HasHiddenLayer, Prunable
    from arena.contract import AttackerContract, DefenderContract
    from arena.data import Dataset, DatasetSource, register_dataset
    from arena.models import Architecture, build_model, register_architecture
    from arena.params import Bool, Choice, Float, Int, Space
    from arena.protocol import AllToOne, AttackOutput, DefenseOutcome, InputFilter, LabelMap, Split, TaskSpec, Trigger, Untargeted, Verdict, goal_from_dict
    from arena.registry import register_attacker, register_defender
    from arena.squeezers import median_smooth, reduce_bit_depth
    from arena.strategy import AttackContext, Attacker, Defender, DefenseContext
    from arena.training import accuracy, fit, logits, predict
    from arena.triggers import poison, register_trigger

__version__ = "0.1.0"

_EXPORTS = {
    "arena.strategy": ("Attacker", "Defender", "AttackContext", "DefenseContext"),
    "arena.params": ("Space", "Float", "Int", "Choice", "Bool"),
    "arena.protocol": ("AttackOutput", "DefenseOutcome", "InputFilter", "Verdict", "Trigger", "Split", "TaskSpec", "AllToOne", "LabelMap", "Untargeted", "goal_from_dict"),
    "arena.training": ("fit", "predict", "logits", "accuracy"),
    "arena.registry": ("register_attacker", "register_defender"),
    "arena.squeezers": ("reduce_bit_depth", "median_smooth"),
    "arena.contract": ("AttackerContract", "DefenderContract"),
    "arena.capabilities": ("Prunable", "HasHiddenLayer", "HasFeatureLayers", "BatchNormalized"),
    "arena.triggers": ("register_trigger", "poison"),
    "arena.models": ("Architecture", "register_architecture", "build_model"),
    "arena.data": ("Dataset", "DatasetSource", "register_dataset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "__version__",
    "AllToOne",
    "Architecture",
    "AttackContext",
    "AttackOutput",
    "Attacker",
    "AttackerContract",
    "BatchNormalized",
    "Bool",
    "Choice",
    "Dataset",
    "DatasetSource",
    "Defender",
    "DefenderContract",
    "DefenseContext",
    "DefenseOutcome",
    "Float",
    "HasFeatureLayers",
    "HasHiddenLayer",
    "InputFilter",
    "Int",
    "LabelMap",
    "Prunable",
    "Space",
    "Split",
    "TaskSpec",
    "Trigger",
    "Untargeted",
    "Verdict",
    "accuracy",
    "build_model",
    "fit",
    "goal_from_dict",
    "logits",
    "median_smooth",
    "poison",
    "predict",
    "reduce_bit_depth",
    "register_architecture",
    "register_attacker",
    "register_dataset",
    "register_defender",
    "register_trigger",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'arena' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
