"""Components by name: adapters, tasks, data sets and model presets.

The registry only stores entries; plugins (built-in ones included, see :mod:`perceiver.plugins`) fill it through
register callbacks. Factories and config classes may be given as ``"module:attribute"`` strings so that listing
names never imports torch or the component's module.

    >>> from perceiver import registry
    >>> [entry.name for entry in registry.list("task")]
    ['clf', 'clm', 'mlm']
    >>> model = registry.create("task", "clm", max_seq_len=64, max_latents=16, num_channels=32)  # doctest: +SKIP
    >>> model = registry.create("model", "clm-tiny")  # a preset: the clm model with its values  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from perceiver import plugins

KINDS = ("adapter", "task", "dataset", "model")
Target = Union[Callable[..., Any], type, str]


class RegistryError(ValueError):
    """A name that does not resolve, or a registration that conflicts."""


def resolve(target: Target) -> Any:
    """Import a ``"module:attribute"`` string; return anything else unchanged."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise RegistryError(f"cannot import {target!r}: {error}") from error


@dataclass(frozen=True)
class Entry:
    """One registered component.

    :param factory: callable (or ``"module:attr"``) that builds the component from a config instance
        (``factory(config)``); for ``model`` presets, the preset's task name is in ``metadata["task"]`` and the
        factory is a dict of config overrides.
    :param config: config dataclass (or ``"module:Class"``) or None for components without options
    :param metadata: kind-specific facts, e.g. ``modality`` of a data set, ``inputs`` a task accepts
    """

    kind: str
    name: str
    factory: Target
    config: Optional[Target]
    description: str
    package: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        return resolve(self.factory)

    def config_class(self) -> Optional[type]:
        return resolve(self.config) if self.config is not None else None

    def build_config(self, **overrides: Any) -> Any:
        """Config dataclass with defaults replaced by the non-None ``overrides``; unknown keys are an error."""
        config_class = self.config_class()
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if config_class is None:
            if overrides:
                raise RegistryError(f"{self.kind} {self.name!r} takes no options, got {sorted(overrides)}")
            return None
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            hints = [h for key in unknown for h in difflib.get_close_matches(key, known, n=1)]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise RegistryError(f"unknown option(s) {', '.join(unknown)} for {self.kind} {self.name!r}{hint}")
        return config_class(**overrides)


class Registry:
    """Name -> :class:`Entry` tables, one per kind."""

    def __init__(
        self,
        on_first_use: Optional[Callable[["Registry"], None]] = None,
        on_miss: Optional[Callable[["Registry"], None]] = None,
    ):
        """``on_first_use`` fills the registry before the first query (the built-ins); ``on_miss`` runs once, before
        the first listing or the first lookup of a name that is not there yet (the third-party plugins)."""
        self._entries: Dict[str, Dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._on_first_use, self._on_miss = on_first_use, on_miss
        self._reset_callbacks()

    def _reset_callbacks(self) -> None:
        self._ready = self._on_first_use is None
        self._complete = self._on_miss is None

    def _ensure_ready(self, complete: bool = False) -> None:
        if not self._ready:
            self._ready = True  # set first: the callback registers through this registry
            self._on_first_use(self)
        if complete and not self._complete:
            self._complete = True
            self._on_miss(self)

    def _table(self, kind: str) -> Dict[str, Entry]:
        if kind not in self._entries:
            raise RegistryError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        return self._entries[kind]

    def register(
        self,
        kind: str,
        name: str,
        factory: Target,
        *,
        config: Optional[Target] = None,
        description: str = "",
        package: str = "perceiver",
        **metadata: Any,
    ) -> Entry:
        """Add a component; a name that is already taken is an error naming both packages."""
        table = self._table(kind)
        if not name or name != name.strip() or any(ch.isspace() for ch in name):
            raise RegistryError(f"invalid {kind} name {name!r}")
        if name in table:
            other = table[name].package
            raise RegistryError(f"{kind} {name!r} is registered twice: by package {other!r} and by {package!r}")
        entry = Entry(kind, name, factory, config, description, package, dict(metadata))
        table[name] = entry
        return entry

    def unregister(self, kind: str, name: str) -> None:
        self._table(kind).pop(name, None)

    def reset(self) -> None:
        """Forget every entry; the next query runs the first-use callback (plugin loading) again."""
        self._entries = {kind: {} for kind in KINDS}
        self._reset_callbacks()

    def get(self, kind: str, name: str) -> Entry:
        """The entry called ``name``; an unknown name is an error listing close matches."""
        self._ensure_ready()
        table = self._table(kind)
        if name not in table:
            self._ensure_ready(complete=True)
        if name in table:
            return table[name]
        close = difflib.get_close_matches(name, table, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        known = ", ".join(sorted(table)) or "none"
        raise RegistryError(f"unknown {kind} {name!r}; {hint}known: {known}")

    def contains(self, kind: str, name: str) -> bool:
        self._ensure_ready()
        if name not in self._table(kind):
            self._ensure_ready(complete=True)
        return name in self._table(kind)

    def list(self, kind: str, pattern: str = "*") -> List[Entry]:
        """Entries of ``kind`` whose name matches the glob ``pattern``, sorted by name."""
        self._ensure_ready(complete=True)
        table = self._table(kind)
        return [table[name] for name in sorted(table) if fnmatch.fnmatch(name, pattern)]

    def create(self, kind: str, name: str, /, **overrides: Any) -> Any:
        """Build a component: ``factory(config)`` with the config's defaults replaced by non-None overrides.

        A model preset builds the model of its task from the preset's config values, then the overrides:
        ``create("model", "clm-tiny", max_latents=8)`` is ``create("task", "clm", **preset_values, max_latents=8)``.
        """
        entry = self.get(kind, name)
        if kind == "model":
            values = entry.load()
            task = entry.metadata.get("task")
            if not isinstance(values, Mapping) or not task:
                raise RegistryError(
                    f"model preset {name!r} of package {entry.package!r} cannot be built: it needs a dict of config "
                    f"values and a task (register(name, {{...}}, task=...))"
                )
            return self.create("task", task, **{**values, **overrides})
        config = entry.build_config(**overrides)
        factory = entry.load()
        return factory(config) if config is not None else factory()


REGISTRY = Registry(on_first_use=plugins.load_builtins, on_miss=plugins.load_plugins)

register = REGISTRY.register
get = REGISTRY.get
create = REGISTRY.create
contains = REGISTRY.contains
list = REGISTRY.list  # noqa: A001 - the registry's query is called list
