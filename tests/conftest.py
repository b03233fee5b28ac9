"""Test-wide settings: third-party plugins are off unless a test turns them on, and plugin state can be reset.

Tests see only the built-in components (and subprocesses they start inherit ``PERCEIVER_DISABLE_PLUGINS=1``), so an
installed plugin such as ``plugins/perceiver-audio`` cannot change their results. Tests about plugins use:

- ``fresh_plugins``: forget every loaded plugin and registered component before and after the test; the next
  registry query loads them again (honouring the environment the test sets up).
- ``add_plugin``: register a throwaway plugin object in-process (hooks called at once), removed after the test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGINS = {"perceiver-audio": ("perceiver_audio.plugin", ROOT / "plugins" / "perceiver-audio")}
"""Plugin packages in plugins/: distribution name -> (plugin module, source directory)."""


def pytest_configure(config):
    os.environ["PERCEIVER_DISABLE_PLUGINS"] = "1"


@pytest.fixture
def fresh_plugins():
    from perceiver import plugins

    plugins._reset_for_tests()
    yield plugins
    plugins._reset_for_tests()


@pytest.fixture
def add_plugin():
    """``add_plugin(obj, package="toy-plugin", name=None)`` registers ``obj``'s hooks now; undone after the test."""
    from perceiver import plugins, registry

    added = []

    def add(plugin, package: str = "toy-plugin", name: str = None, version: str = "0.0.1"):
        name = name or package
        registry.list("task")  # load the built-ins first, so that they are not registered again later
        info = plugins.add_plugin(plugin, name, package, version)
        added.append((name, package))
        if info is not None:
            plugins.call_register_hooks(registry.REGISTRY, [name])
        return info

    yield add
    for name, package in added:
        plugins.remove_plugin(name)
        for kind in registry.KINDS:
            for entry in registry.list(kind):
                if entry.package == package:
                    registry.REGISTRY.unregister(kind, entry.name)


def example_plugin_module(package: str):
    """Import the plugin module of a package in plugins/ from its source directory (no installation needed)."""
    import importlib

    module, source = EXAMPLE_PLUGINS[package]
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    return importlib.import_module(module)


@pytest.fixture
def cli_width(monkeypatch):
    """Wide, plain terminal output so that rich tables do not fold names."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
