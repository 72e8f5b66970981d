"""One registry per strategy kind: a decorator for built-ins, entry points for plugins, loaded lazily.

Built-ins live in the `attackers` / `defenders` packages and register on import. Third-party
strategies are published under the entry point groups `arena.attackers` / `arena.defenders` and
are named `package/name` (package: the distribution that ships them). A plugin is imported only
when it is used or listed, and a broken one is reported by name without hiding the others.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from arena.errors import ArenaError, UnknownNameError
from arena.params import Space
from arena.strategy import Attacker, Defender, Strategy

S = TypeVar("S", bound=Strategy)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistrationError(Exception):
    """A strategy class whose declaration is unusable (a programming error, raised at import)."""


class Registry(Generic[S]):
    def __init__(self, kind: str, base: type, builtin_package: str, group: str) -> None:
        self.kind = kind
        self.base = base
        self.builtin_package = builtin_package
        self.group = group
        self._builtins: dict[str, type[S]] = {}
        self._builtins_loaded = False
        self._plugins: dict[str, EntryPoint] | None = None
        self._plugin_classes: dict[str, type[S]] = {}
        self.plugin_errors: dict[str, str] = {}  # qualified name -> what went wrong

    # -- registration -----------------------------------------------------------------------

    def register(self, cls: type[S]) -> type[S]:
        """Class decorator for built-in strategies."""
        self.validate_class(cls)
        if cls.name in self._builtins and self._builtins[cls.name] is not cls:
            raise RegistrationError(f"duplicate {self.kind} name {cls.name!r}: {self._builtins[cls.name].__qualname__} and {cls.__qualname__}")
        self._builtins[cls.name] = cls
        return cls

    def validate_class(self, cls: Any) -> None:
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            raise RegistrationError(f"{cls!r} is not a subclass of {self.base.__name__}")
        for attr in ("name", "version", "paper"):
            value = getattr(cls, attr, None)
            if not isinstance(value, str) or not value.strip():
                raise RegistrationError(f"{self.kind} class {cls.__qualname__} must declare a non-empty string `{attr}`")
        name, space = getattr(cls, "name"), getattr(cls, "space", None)  # noqa: B009 (checked above)
        if not NAME_RE.match(name):
            raise RegistrationError(f"{self.kind} name {name!r} must be lower_snake_case")
        if not isinstance(space, Space):
            raise RegistrationError(f"{self.kind} {name!r}: `space` must be an arena.params.Space")

    # -- lookup -----------------------------------------------------------------------------

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module(self.builtin_package)

    def _plugin_points(self) -> dict[str, EntryPoint]:
        if self._plugins is None:
            self._plugins = {}
            for ep in entry_points(group=self.group):
                package = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
                self._plugins[f"{package.lower().replace('-', '_')}/{ep.name}"] = ep
        return self._plugins

    def refresh(self) -> None:
        """Forget discovered plugins (after installing one into the running interpreter)."""
        self._plugins = None
        self._plugin_classes.clear()
        self.plugin_errors.clear()

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._builtins) + sorted(self._plugin_points())

    def _load_plugin(self, qualified: str) -> type[S]:
        if qualified in self._plugin_classes:
            return self._plugin_classes[qualified]
        ep = self._plugin_points()[qualified]
        where = f"entry point {ep.name!r} = {ep.value!r} of package {qualified.split('/')[0]!r} (group {self.group})"
        try:
            cls = ep.load()
        except Exception as exc:
            self.plugin_errors[qualified] = f"{where} failed to import: {type(exc).__name__}: {exc}"
            raise PluginLoadError(self.plugin_errors[qualified]) from None
        try:
            self.validate_class(cls)
        except RegistrationError as exc:
            self.plugin_errors[qualified] = f"{where} is unusable: {exc}"
            raise PluginLoadError(self.plugin_errors[qualified]) from None
        self._plugin_classes[qualified] = cls
        return cls

    def get(self, name: str) -> type[S]:
        self._load_builtins()
        if name in self._builtins:
            return self._builtins[name]
        if name in self._plugin_points():
            return self._load_plugin(name)
        raise UnknownNameError(self.kind, name, self.names())

    def create(self, name: str, params: dict[str, Any] | None = None) -> S:
        return self.get(name)(**(params or {}))

    def all_classes(self) -> dict[str, type[S] | None]:
        """Every name with its class, or None for a plugin that failed to load (see plugin_errors)."""
        out: dict[str, type[S] | None] = {}
        for name in self.names():
            try:
                out[name] = self.get(name)
            except PluginLoadError:
                out[name] = None
        return out


class PluginLoadError(ArenaError):
    """A plugin's entry point could not be turned into a usable strategy class."""


ATTACKERS: Registry[Attacker] = Registry("attacker", Attacker, "attackers", "arena.attackers")
DEFENDERS: Registry[Defender] = Registry("defender", Defender, "defenders", "arena.defenders")

register_attacker: Callable[[type[Attacker]], type[Attacker]] = ATTACKERS.register
register_defender: Callable[[type[Defender]], type[Defender]] = DEFENDERS.register
