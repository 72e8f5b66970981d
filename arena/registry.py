"""One `Registry` class for every extension point: a decorator for built-ins, entry points for plugins.

Extension points (docs/design.md §10): attackers and defenders (`arena.strategy`'s base classes),
trigger kinds (`arena.triggers`), architectures and architecture wrappers (`arena.models`) and
datasets (`arena.data`). Built-ins register when their module is imported. Third-party entries
are published under the entry point group of their registry (`arena.attackers`,
`arena.defenders`, `arena.triggers`, `arena.architectures`, `arena.datasets`) and are imported
only when used or listed; a broken one is reported by name without hiding the others.

Strategy plugins are named `package/name` (package: the distribution that ships them), so two
authors cannot collide. Trigger kinds, architectures and datasets keep their plain names, since
those names are written into specs and manifests; a plugin name that is already taken is refused.

Every entry knows where it came from (`origin`): the module that defines it and the distribution
that ships it. An attack's manifest records the origins of its trigger kinds and architecture,
and the defense stage imports exactly those before it rebuilds the model (`load_origins`).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from importlib import metadata
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from arena.errors import ArenaError, ArtifactIntegrityError, UnknownNameError
from arena.params import Space

if TYPE_CHECKING:
    from arena.strategy import Attacker, Defender

T = TypeVar("T")

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


# Every registry (one per extension point), and the folders of installed plugins added to the path
# at run time (an isolated submission, arena.submission): a tournament sends these with every job.
_REGISTRIES: list[Registry[Any]] = []
_PLUGIN_PATHS: list[str] = []


def add_plugin_path(path: str) -> None:
    """Add a folder of installed plugins for this process and the tournament workers it sends
    jobs to (`plugin_paths`)."""
    if path not in _PLUGIN_PATHS:
        _PLUGIN_PATHS.append(path)
    use_plugin_paths(_PLUGIN_PATHS)


def remove_plugin_path(path: str) -> None:
    """Undo `add_plugin_path` (a folder about to be deleted)."""
    if path in _PLUGIN_PATHS:
        _PLUGIN_PATHS.remove(path)
    if path in sys.path:
        sys.path.remove(path)
    prefix = path.rstrip("/") + "/"
    for name in [n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", None) or "").startswith(prefix)]:
        del sys.modules[name]  # imported from the folder: a later import must not find them
    for registry in _REGISTRIES:
        registry.refresh()


def plugin_paths() -> tuple[str, ...]:
    return tuple(_PLUGIN_PATHS)


def use_plugin_paths(paths: tuple[str, ...] | list[str]) -> None:
    """Put these folders last on the path (a name they share with anything already here
    resolves to what was here; arena.submission refuses such names too); when one is new, every
    registry forgets the plugins it discovered, so the next lookup finds the folders' entry points."""
    new = [p for p in paths if p not in sys.path]
    sys.path.extend(new)
    if new:
        for registry in _REGISTRIES:
            registry.refresh()


class RegistrationError(Exception):
    """An entry whose declaration is unusable (a programming error, raised at import)."""


class PluginLoadError(ArenaError):
    """A plugin's entry point could not be turned into a usable registry entry."""


def _distribution_of(module: str) -> str | None:
    for dist in metadata.packages_distributions().get(module.split(".")[0], []):
        return dist
    return None


def module_of(entry: Any) -> str:
    """The module that defines an entry: a class's own, or that of what an entry object builds with."""
    if isinstance(entry, type):
        return entry.__module__
    return str(getattr(entry, "module", None) or type(entry).__module__)


class Registry(Generic[T]):
    """Named entries of one kind.

    kind: what an entry is, for messages ("attacker", "trigger kind"); group: the entry point
    group plugins publish under; builtins: the modules whose import registers the built-ins;
    key: the name an entry registers under; validate: raises RegistrationError for an unusable
    entry; qualify_plugins: name plugins `package/name` (strategies) rather than plainly.
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str,
        builtins: tuple[str, ...],
        key: Callable[[Any], str],
        validate: Callable[[Any], None] = lambda entry: None,
        qualify_plugins: bool = False,
    ) -> None:
        self.kind = kind
        self.group = group
        _REGISTRIES.append(self)
        self.builtin_modules = builtins
        self.key = key
        self._validate = validate
        self.qualify_plugins = qualify_plugins
        self._builtins: dict[str, T] = {}
        self._builtin_modules: dict[str, str] = {}  # name -> the module that registered it
        self._builtins_loaded = False
        self._plugins: dict[str, EntryPoint] | None = None
        self._plugin_entries: dict[str, T] = {}
        self._clashes: dict[str, str] = {}  # plugin name -> why it cannot be used (taken twice)
        self.plugin_errors: dict[str, str] = {}  # name -> what went wrong

    # -- registration -----------------------------------------------------------------------

    def validate(self, entry: Any) -> None:
        """Raise RegistrationError when `entry` cannot be registered (also run on plugins)."""
        try:
            name = self.key(entry)
        except Exception as exc:  # an entry without the attribute its name is read from
            raise RegistrationError(f"{entry!r} is not a {self.kind}: {exc}") from None
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise RegistrationError(f"{self.kind} name {name!r} must be lower_snake_case")
        self._validate(entry)

    def register(self, entry: T) -> T:
        """Register a built-in (usable as a class decorator); a name registered twice is refused."""
        self.validate(entry)
        name = self.key(entry)
        if name in self._builtins and self._builtins[name] is not entry:
            raise RegistrationError(f"duplicate {self.kind} name {name!r}: {self._builtins[name]!r} and {entry!r}")
        self._builtins[name] = entry
        caller = sys._getframe(1).f_globals.get("__name__")  # the module whose import registers it
        self._builtin_modules[name] = caller if isinstance(caller, str) and caller != __name__ else module_of(entry)
        return entry

    # -- lookup -----------------------------------------------------------------------------

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self.builtin_modules:
                importlib.import_module(module)

    def _plugin_points(self) -> dict[str, EntryPoint]:
        if self._plugins is None:
            self._plugins = {}
            for ep in entry_points(group=self.group):
                package = (ep.dist.name if ep.dist is not None else ep.module.split(".")[0]).lower().replace("-", "_")
                name = f"{package}/{ep.name}" if self.qualify_plugins else ep.name
                if name in self._plugins and self._plugins[name].value != ep.value:
                    self._clashes[name] = f"{self.kind} {name!r} is published twice, as {self._plugins[name].value!r} and {ep.value!r} (group {self.group}); uninstall or rename one."
                self._plugins[name] = ep
        return self._plugins

    def refresh(self) -> None:
        """Forget discovered plugins (after installing one into the running interpreter)."""
        self._plugins = None
        self._plugin_entries.clear()
        self._clashes.clear()
        self.plugin_errors.clear()

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._builtins) + sorted(n for n in self._plugin_points() if n not in self._builtins)

    def _load_plugin(self, name: str) -> T:
        if name in self._plugin_entries:
            return self._plugin_entries[name]
        if name in self._clashes:
            self.plugin_errors[name] = self._clashes[name]
            raise PluginLoadError(self._clashes[name])
        ep = self._plugin_points()[name]
        dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        where = f"entry point {ep.name!r} = {ep.value!r} of package {dist!r} (group {self.group})"
        if self.qualify_plugins:  # a strategy is untrusted code: its module is imported in a sandbox first
            from arena.sandbox import probe_entry_point

            if (failure := probe_entry_point(self.kind, name, ep.module, ep.attr)) is not None:
                self.plugin_errors[name] = f"{where} failed to import in a sandbox, so arena did not import it: {failure}"
                raise PluginLoadError(self.plugin_errors[name])
        try:
            entry = ep.load()
        except Exception as exc:
            self.plugin_errors[name] = f"{where} failed to import: {type(exc).__name__}: {exc}"
            raise PluginLoadError(self.plugin_errors[name]) from None
        try:
            self.validate(entry)
            if not self.qualify_plugins and self.key(entry) != name:
                raise RegistrationError(f"it declares the {self.kind} name {self.key(entry)!r}, not {name!r}")
        except RegistrationError as exc:
            self.plugin_errors[name] = f"{where} is unusable: {exc}"
            raise PluginLoadError(self.plugin_errors[name]) from None
        self._plugin_entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self._load_builtins()
        if name in self._builtins:
            if name in self._plugin_points() and name not in self.plugin_errors:  # a built-in name stays the built-in's
                ep = self._plugin_points()[name]
                self.plugin_errors[name] = f"entry point {ep.value!r} (group {self.group}) is ignored: {self.kind} {name!r} is built in; rename the plugin's."
            return self._builtins[name]
        if name in self._plugin_points():
            return self._load_plugin(name)
        raise UnknownNameError(self.kind, name, self.names())

    def all_entries(self) -> dict[str, T | None]:
        """Every name with its entry, or None for a plugin that failed to load (see plugin_errors)."""
        out: dict[str, T | None] = {}
        for name in self.names():
            try:
                out[name] = self.get(name)
            except PluginLoadError:
                out[name] = None
        return out

    def origin(self, name: str) -> dict[str, Any]:
        """Where entry `name` comes from: its registry, name, defining module and distribution."""
        entry = self.get(name)
        if name not in self._builtins:
            ep = self._plugin_points()[name]
            return {"registry": self.kind, "name": name, "module": ep.module, "distribution": ep.dist.name if ep.dist is not None else None}
        module = self._builtin_modules.get(name) or module_of(entry)
        return {"registry": self.kind, "name": name, "module": module, "distribution": _distribution_of(module)}


class StrategyRegistry(Registry[T]):
    """Attackers or defenders: classes keyed by their `name`, with the metadata every strategy declares."""

    def __init__(self, kind: str, base: str, builtins: str, group: str) -> None:
        self.base_name = base
        super().__init__(kind, group=group, builtins=(builtins,), key=lambda cls: cls.name, qualify_plugins=True)

    @property
    def base(self) -> type:
        from arena import strategy  # the strategy module imports the models, which use this module

        return getattr(strategy, self.base_name)  # type: ignore[no-any-return]

    def _validate_strategy(self, cls: Any) -> None:
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            raise RegistrationError(f"{cls!r} is not a subclass of {self.base.__name__}")
        for attr in ("name", "version", "paper"):
            value = getattr(cls, attr, None)
            if not isinstance(value, str) or not value.strip():
                raise RegistrationError(f"{self.kind} class {cls.__qualname__} must declare a non-empty string `{attr}`")
        if not isinstance(getattr(cls, "space", None), Space):
            raise RegistrationError(f"{self.kind} {getattr(cls, 'name', '?')!r}: `space` must be an arena.params.Space")

    def validate(self, entry: Any) -> None:
        self._validate_strategy(entry)  # says what is missing, in the strategy's terms
        super().validate(entry)  # then the name's form

    def create(self, name: str, params: dict[str, Any] | None = None) -> Any:
        return self.get(name)(**(params or {}))  # type: ignore[operator]

    def all_classes(self) -> dict[str, T | None]:
        return self.all_entries()


ATTACKERS: StrategyRegistry[type[Attacker]] = StrategyRegistry("attacker", "Attacker", "arena.attackers", "arena.attackers")
DEFENDERS: StrategyRegistry[type[Defender]] = StrategyRegistry("defender", "Defender", "arena.defenders", "arena.defenders")

register_attacker: Callable[[type[Attacker]], type[Attacker]] = ATTACKERS.register
register_defender: Callable[[type[Defender]], type[Defender]] = DEFENDERS.register


def load_origins(origins: Any, registries: dict[str, Registry[Any]], where: str) -> None:
    """Import what a manifest says its model and triggers need, each from the module that defines
    it, and check the registries then know it: a stage never depends on what else happened to be
    imported. Only arena's own modules and the modules of installed entry points are imported
    (a manifest cannot make the evaluator import anything else). A missing provider is a clear
    error naming the distribution to install."""
    if not isinstance(origins, list) or not all(isinstance(o, dict) for o in origins):
        raise ArtifactIntegrityError(f"{where} records unreadable origins {origins!r}; refused. Remove it to have arena retrain the model.")
    for origin in origins:
        registry = registries.get(str(origin.get("registry")))
        name, module, dist = origin.get("name"), origin.get("module"), origin.get("distribution")
        if registry is None or not isinstance(name, str) or not isinstance(module, str):
            raise ArtifactIntegrityError(f"{where} records an unreadable origin {origin!r}; refused. Remove it to have arena retrain the model.")
        published = {ep.module for ep in registry._plugin_points().values()}
        if module != "arena" and not module.startswith("arena.") and module not in published:
            raise PluginLoadError(
                f"{where} needs the {registry.kind} {name!r} from module {module!r} of distribution {dist or 'unknown'!r}, which is not an installed "
                f"entry point of the group {registry.group}. A plugin's trigger kinds and architectures reach other processes only through entry points: "
                f"publish it under {registry.group} and install it where the defense runs."
            )
        try:
            importlib.import_module(module)
            registry.get(name)
        except Exception as exc:  # an import error, or a plugin module that raises while importing
            raise PluginLoadError(
                f"{where} needs the {registry.kind} {name!r} from module {module!r} of distribution {dist or 'unknown'!r}, "
                f"which this environment cannot load ({type(exc).__name__}: {exc}). Install that distribution where the defense runs."
            ) from None
