"""Plugin hooks. A plugin is a module with functions marked ``@perceiver.hookimpl`` whose names are these.

Every hook is a callback: the host passes ``register`` (or the CLI ``app``) and the plugin calls it. The built-in
components register through the same hooks (:mod:`perceiver.builtins`).
"""

import pluggy

hookspec = pluggy.HookspecMarker("perceiver")
hookimpl = pluggy.HookimplMarker("perceiver")


@hookspec
def register_adapters(register):
    """Register input adapters:
    ``register(name, factory, config=ConfigClass, description=..., modality=..., input=...)``."""


@hookspec
def register_tasks(register):
    """Register tasks: ``register(name, model_class, config=ConfigClass, description=...,
    metrics="module:batch_metrics", inputs=(...), batches=(...))``."""


@hookspec
def register_datasets(register):
    """Register data sets:
    ``register(name, datamodule_class, config=ConfigClass, description=..., modality=..., batch=...)``."""


@hookspec
def register_models(register):
    """Register model presets: ``register(name, {config overrides}, description=..., task=...)``."""


@hookspec
def register_commands(app):
    """Add commands to the ``perceiver`` Typer app."""
