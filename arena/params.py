"""Hyperparameter spaces: declared by every strategy, validated before work, searchable by Ray Tune."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arena.errors import ParamError, UnknownNameError


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default and the set of values it admits."""

    default: Any
    help: str = field(default="", kw_only=True)
    # The range worth searching, declared by the strategy (`arena oracle` searches it unless the
    # suite names another): (low, high) for a number, on the parameter's own scale (a `log`
    # Float is searched log-uniformly); a tuple of options, or True for all, for a choice. A
    # validation range (a trigger of up to 4096 pixels) is not a search range, hence a separate
    # declaration; None: not searched unless a suite asks.
    search: Any = field(default=None, kw_only=True)
    # False for a parameter added after specs were published whose default reproduces the
    # behaviour from before it existed: at that default a spec leaves it out (Space.key_params),
    # so every earlier spec keeps its key, seed streams, models and rows. A parameter whose
    # default changes behaviour keeps True (its strategy's version is bumped instead).
    keyed_at_default: bool = field(default=True, kw_only=True)

    def search_range(self) -> Any:
        """The declared search range in the suite's `search` vocabulary ([low, high],
        [low, high, "log"] or {"choices": [...]}), each end checked against the parameter's own
        range; None when nothing is declared."""
        if self.search is None:
            return None
        return self._search_range()

    def _search_range(self) -> Any:
        raise TypeError(f"a {type(self).__name__} parameter has no search range")

    def coerce(self, name: str, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def tune(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _bad(name: str, value: Any, expected: str) -> ParamError:
    return ParamError(f"Hyperparameter {name!r} got {value!r}; expected {expected}.")


@dataclass(frozen=True)
class Int(Param):
    low: int = 0
    high: int = 2**31 - 1

    def coerce(self, name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise _bad(name, value, f"an integer in [{self.low}, {self.high}]")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _bad(name, value, f"an integer in [{self.low}, {self.high}]") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not self.low <= value <= self.high:
            raise _bad(name, value, f"an integer in [{self.low}, {self.high}]")
        return value

    def describe(self) -> str:
        return f"int in [{self.low}, {self.high}]"

    def tune(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)

    def _search_range(self) -> Any:
        low, high = self.search
        if not self.low <= low < high <= self.high:
            raise ValueError(f"search range {self.search} is not inside [{self.low}, {self.high}]")
        return [int(low), int(high)]


@dataclass(frozen=True)
class Float(Param):
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    log: bool = False

    def _expected(self) -> str:
        left = "(" if self.low_open else "["
        return f"a number in {left}{self.low}, {self.high}]"

    def coerce(self, name: str, value: Any) -> float:
        if isinstance(value, bool):
            raise _bad(name, value, self._expected())
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _bad(name, value, self._expected()) from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(name, value, self._expected())
        value = float(value)
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            raise _bad(name, value, self._expected())
        return value

    def describe(self) -> str:
        return self._expected()[2:]

    def tune(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)

    def _search_range(self) -> Any:
        low, high = (float(v) for v in self.search)
        if not self.low <= low < high <= self.high or (self.log and low <= 0):
            raise ValueError(f"search range {self.search} is not inside [{self.low}, {self.high}]")
        return [low, high, "log"] if self.log else [low, high]


@dataclass(frozen=True)
class Choice(Param):
    options: tuple[Any, ...] = ()

    def coerce(self, name: str, value: Any) -> Any:
        for option in self.options:
            if value == option or (isinstance(value, str) and value.strip() == str(option)):
                return option
        raise _bad(name, value, f"one of {', '.join(repr(o) for o in self.options)}")

    def describe(self) -> str:
        return "one of " + ", ".join(str(o) for o in self.options)

    def tune(self) -> Any:
        from ray import tune

        return tune.choice(list(self.options))

    def _search_range(self) -> Any:
        options = list(self.options) if self.search is True else list(self.search)
        if len(options) < 2 or any(o not in self.options for o in options):
            raise ValueError(f"search options {self.search} are not two or more of {self.options}")
        return {"choices": options}


@dataclass(frozen=True)
class Bool(Param):
    def coerce(self, name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"false", "0", "no", "off"}:
            return False
        raise _bad(name, value, "true or false")

    def describe(self) -> str:
        return "true or false"

    def tune(self) -> Any:
        from ray import tune

        return tune.choice([False, True])

    def _search_range(self) -> Any:
        return {"choices": [False, True]}


@dataclass(frozen=True)
class Text(Param):
    """A free-form string (e.g. a label map "1,2,0"); the strategy parses and checks it."""

    max_length: int = 1000

    def coerce(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_length:
            raise _bad(name, value, f"a string of at most {self.max_length} characters")
        return value.strip()

    def describe(self) -> str:
        return "text"

    def tune(self) -> Any:
        from ray import tune

        return tune.choice([self.default])


class Space(Mapping[str, Param]):
    """An ordered, immutable mapping of hyperparameter names to their declarations."""

    def __init__(self, **params: Param) -> None:
        for name, param in params.items():
            param.coerce(name, param.default)  # a default outside its own space is a bug
            param.search_range()  # so is a search range outside it
        self._params = dict(params)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __or__(self, other: Space) -> Space:
        return Space(**{**self._params, **other._params})

    def with_defaults(self, **defaults: Any) -> Space:
        """This space with some defaults changed (each still checked against its range)."""
        unknown = set(defaults) - set(self._params)
        if unknown:
            raise ValueError(f"no such parameters: {sorted(unknown)}")
        return Space(**{k: (dataclasses.replace(v, default=defaults[k]) if k in defaults else v) for k, v in self._params.items()})

    def without(self, *names: str) -> Space:
        """This space less some parameters (an attack that fixes them itself)."""
        return Space(**{k: v for k, v in self._params.items() if k not in names})

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self._params.items()}

    def validate(self, values: Mapping[str, Any], owner: str = "strategy") -> dict[str, Any]:
        """Return the full, typed parameter dict: defaults overridden by `values`."""
        out = self.defaults()
        for name, value in values.items():
            if name not in self._params:
                raise UnknownNameError("hyperparameter", name, self._params, owner=owner)
            out[name] = self._params[name].coerce(name, value)
        return out

    def key_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The validated `values` as a spec records them: parameters declared
        `keyed_at_default=False` are left out at their default."""
        return {k: v for k, v in values.items() if k not in self._params or self._params[k].keyed_at_default or not (type(v) is type(self._params[k].default) and v == self._params[k].default)}

    def search_ranges(self) -> dict[str, Any]:
        """The ranges the strategy declares worth searching, in the suite's `search` vocabulary."""
        return {name: r for name, p in self._params.items() if (r := p.search_range()) is not None}

    def tune_space(self) -> dict[str, Any]:
        """The space in Ray Tune's search-space vocabulary."""
        return {name: p.tune() for name, p in self._params.items()}
