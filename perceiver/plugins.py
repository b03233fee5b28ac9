"""Plugin discovery with pluggy.

Third-party packages declare an entry point in the group ``perceiver``::

    [project.entry-points.perceiver]
    audio = "perceiver_audio.plugin"

Plugins are loaded once, on first use of the registry. ``PERCEIVER_DISABLE_PLUGINS=1`` skips third-party plugins
(the built-in ones always load); ``PERCEIVER_LOAD_PLUGINS=a,b`` loads only the named entry points.
A plugin that fails to import, or raises in a hook, is reported as one warning line and skipped; a plugin with a
hook implementation that matches no hook is unregistered and reported as an error after the others have loaded.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Dict, List, Optional

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


class PluginError(RuntimeError):
    """A plugin that cannot be used as written (e.g. a hook implementation with no matching hook)."""


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
_loaded = False


def plugins_disabled() -> bool:
    return os.environ.get("PERCEIVER_DISABLE_PLUGINS", "").lower() in ("1", "true", "yes")


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def _unknown_hooks(plugin: Any) -> List[str]:
    """Names of functions marked as hook implementations that match no hook spec."""
    marker = f"{GROUP}_impl"
    return [
        name
        for name in dir(plugin)
        if getattr(getattr(plugin, name, None), marker, None) is not None and not hasattr(pm.hook, name)
    ]


def add_plugin(plugin: Any, name: str, package: str, version: str = "") -> Optional[PluginInfo]:
    """Register one plugin object (a module or instance) under ``name``; return None if it was rejected."""
    unknown = _unknown_hooks(plugin)
    error = None
    if unknown:
        hooks = [h for h in vars(pm.hook) if not h.startswith("_")]
        hints = {h: difflib.get_close_matches(h, hooks, n=1) for h in unknown}
        error = "unknown hook(s) " + ", ".join(f"{h} (did you mean {c[0]}?)" if c else h for h, c in hints.items())
    else:
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as validation_error:  # e.g. a misspelt hook argument
            error = " ".join(str(validation_error).split())
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


def load_plugins(registry: "Registry") -> None:
    """Register the built-in components and, unless disabled, those of installed plugins. Runs once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    from perceiver import __version__

    add_plugin(importlib.import_module(BUILTIN), "perceiver", "perceiver", __version__)
    names = ["perceiver"]
    rejected = []
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
                rejected.append(ep.name)
            else:
                names.append(ep.name)
    call_register_hooks(registry, names)
    if rejected:
        details = "; ".join(f"{_plugins[n].package!r}: {_plugins[n].error}" for n in rejected)
        raise PluginError(
            f"plugin hook implementation matches no hook spec ({details}); skip plugins with --no-plugins"
        )


def register_commands(app: Any) -> None:
    """Load the plugins (once) and let each add CLI commands."""
    from perceiver.registry import REGISTRY

    load_plugins(REGISTRY)
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


def _reset_for_tests() -> None:  # pragma: no cover - used by tests only
    """Forget every plugin and every registered component: the next registry query loads them again."""
    global _loaded
    from perceiver.registry import REGISTRY

    for name, plugin in pm.list_name_plugin():
        pm.unregister(plugin, name=name)
    _plugins.clear()
    _loaded = False
    sys.modules.pop(BUILTIN, None)
    REGISTRY.reset()
