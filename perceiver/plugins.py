"""Plugin discovery with pluggy.

Third-party packages declare an entry point in the group ``perceiver``::

    [project.entry-points.perceiver]
    audio = "perceiver_audio.plugin"

The built-in components are registered on first use of the registry; third-party plugins are loaded once, when a
name is asked for that the built-ins do not have, or a listing is asked for (so building a model from built-in
components loads no plugin). ``PERCEIVER_DISABLE_PLUGINS=1`` skips third-party plugins
(the built-in ones always load); ``PERCEIVER_LOAD_PLUGINS=a,b`` loads only the named entry points.
A plugin that fails to import, raises in a hook, or has a hook implementation that matches no hook (a misspelt
hook or argument name) is reported as one warning line and skipped; the others load and the CLI works. The same
warning is printed once.

This module never imports :mod:`perceiver.registry`: the registry to fill is passed in.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

import pluggy

from perceiver import hookspecs

if TYPE_CHECKING:
    from perceiver.registry import Registry

GROUP = "perceiver"
BUILTIN = "perceiver.builtins"
REGISTER_HOOKS = {
    "register_adapters": "adapter",
    "register_tasks": "task",
    "register_datasets": "dataset",
    "register_models": "model",
}


class PluginWarning(UserWarning):
    """A plugin that failed and was skipped."""


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    hooks: List[str] = field(default_factory=list)
    error: Optional[str] = None


pm = pluggy.PluginManager(GROUP)
pm.add_hookspecs(hookspecs)
_plugins: Dict[str, PluginInfo] = {}
_builtins_loaded = False
_loaded = False
_loaded_into: Optional["Registry"] = None
_warned: Set[str] = set()


def plugins_disabled() -> bool:
    return os.environ.get("PERCEIVER_DISABLE_PLUGINS", "").lower() in ("1", "true", "yes")


def _warn(message: str) -> None:
    if message in _warned:  # e.g. a plugin whose hooks fail again for a second app in the same process
        return
    _warned.add(message)
    warnings.warn(message, PluginWarning, stacklevel=3)


def _known_hooks() -> List[str]:
    return [name for name, caller in vars(pm.hook).items() if not name.startswith("_") and caller.has_spec()]


def _unknown_hooks(plugin: Any) -> List[str]:
    """Hooks implemented by the registered ``plugin`` that have no spec (and are not marked ``optionalhook``)."""
    return sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or []
        if not caller.has_spec()
        and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
    )


def add_plugin(plugin: Any, name: str, package: str, version: str = "") -> Optional[PluginInfo]:
    """Register one plugin object (a module or instance) under ``name``; return None if it was rejected (the reason
    is in its :class:`PluginInfo`): a hook argument that the hook does not have, or a hook implementation that
    matches no hook (pluggy's ``check_pending``)."""
    error = None
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as validation_error:
        unknown = _unknown_hooks(plugin) if pm.is_registered(plugin) else []
        if unknown:
            hints = {h: difflib.get_close_matches(h, _known_hooks(), n=1) for h in unknown}
            error = "unknown hook " + ", ".join(f"{h} (did you mean {c[0]}?)" if c else h for h, c in hints.items())
        else:  # e.g. a misspelt hook argument
            error = " ".join(str(validation_error).split())
        if pm.is_registered(plugin):
            pm.unregister(plugin)
    if error:
        _plugins[name] = PluginInfo(name, package, version, error=error)
        return None
    hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
    info = PluginInfo(name, package, version, hooks)
    _plugins[name] = info
    return info


def remove_plugin(name: str) -> None:
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _plugins.pop(name, None)


def call_register_hooks(registry: "Registry", plugin_names: Optional[List[str]] = None) -> None:
    """Call the register_* hooks of the given plugins (all when None), each in isolation."""
    for hook_name, kind in REGISTER_HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if plugin_names is not None and impl.plugin_name not in plugin_names:
                continue
            info = _plugins.get(impl.plugin_name)
            package = info.package if info else impl.plugin_name
            register = functools.partial(registry.register, kind, package=package)
            try:
                impl.function(register=register)
            except Exception as error:  # a broken plugin must not break the others
                if package == "perceiver":
                    raise
                _warn(f"plugin {package!r} failed in {hook_name}: {type(error).__name__}: {error}")


def _entry_points() -> List[metadata.EntryPoint]:
    selected = os.environ.get("PERCEIVER_LOAD_PLUGINS")
    eps = list(metadata.entry_points(group=GROUP))
    if selected is not None:
        names = {n.strip() for n in selected.split(",") if n.strip()}
        eps = [ep for ep in eps if ep.name in names]
    return eps


def load_builtins(registry: "Registry") -> None:
    """Register the built-in components into ``registry`` (once)."""
    global _builtins_loaded, _loaded_into
    if _builtins_loaded:
        return
    _builtins_loaded, _loaded_into = True, registry
    import importlib

    from perceiver import __version__

    add_plugin(importlib.import_module(BUILTIN), "perceiver", "perceiver", __version__)
    call_register_hooks(registry, ["perceiver"])


def load_plugins(registry: "Registry") -> None:
    """Register the built-in components and, unless disabled, those of installed plugins into ``registry``. Runs
    once; a plugin that cannot be used is one warning line and is skipped."""
    global _loaded
    load_builtins(registry)
    if _loaded:
        return
    _loaded = True
    names = []
    if not plugins_disabled():
        for ep in _entry_points():
            package = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else ""
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as error:
                _plugins[ep.name] = PluginInfo(ep.name, package, version, error=f"{type(error).__name__}: {error}")
                _warn(f"plugin {package!r} could not be loaded: {type(error).__name__}: {error}")
                continue
            if add_plugin(plugin, ep.name, package, version) is None:
                _warn(f"plugin {package!r} skipped: {_plugins[ep.name].error}")
            else:
                names.append(ep.name)
    call_register_hooks(registry, names)


def register_commands(app: Any, registry: "Registry") -> None:
    """Load the plugins into ``registry`` (once) and let each add CLI commands to ``app``."""
    load_plugins(registry)
    for impl in pm.hook.register_commands.get_hookimpls():
        info = _plugins.get(impl.plugin_name)
        package = info.package if info else impl.plugin_name
        taken = _command_names(app.registered_commands) | _command_names(app.registered_groups)
        known = len(app.registered_commands), len(app.registered_groups)
        try:
            impl.function(app=app)
        except Exception as error:
            _warn(f"plugin {package!r} failed in register_commands: {type(error).__name__}: {error}")
        for registered, start in zip((app.registered_commands, app.registered_groups), known):
            for added in list(registered[start:]):  # a plugin must not replace an existing command
                name = next(iter(_command_names([added])))
                if name in taken:
                    registered.remove(added)
                    _warn(f"plugin {package!r} failed in register_commands: command {name!r} already exists")
                taken.add(name)


def _command_names(infos: Any) -> set:
    """CLI names of Typer command or group infos (explicit name, else derived from the function name)."""

    def plain(value: Any) -> Any:
        return getattr(value, "value", value)  # unwrap Typer's DefaultPlaceholder

    names = set()
    for info in infos:
        name = plain(info.name)
        instance = getattr(info, "typer_instance", None)
        if name is None and instance is not None:
            name = plain(instance.info.name)
        callback = plain(getattr(info, "callback", None))
        if name is None and callback is not None:
            name = callback.__name__.lower().replace("_", "-")
        names.add(name)
    return names


def list_plugins() -> List[PluginInfo]:
    return sorted(_plugins.values(), key=lambda info: (info.name != "perceiver", info.name))


def _reset_for_tests(registry: Optional["Registry"] = None) -> None:  # pragma: no cover - used by tests only
    """Forget every plugin, every warning given and every component registered in ``registry`` (default: the
    registry the plugins were loaded into): the next registry query loads them again."""
    global _builtins_loaded, _loaded, _loaded_into
    registry = registry or _loaded_into
    for name, plugin in pm.list_name_plugin():
        pm.unregister(plugin, name=name)
    _plugins.clear()
    _warned.clear()
    _builtins_loaded, _loaded, _loaded_into = False, False, None
    sys.modules.pop(BUILTIN, None)
    if registry is not None:
        registry.reset()
