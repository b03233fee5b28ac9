"""The registry: its queries and errors, and every registered component built and trained for one step.

The component tests are parametrized over the registry itself (built-ins, plus the example plugins in plugins/,
registered in-process from source): register a component and it is tested here. Each needs a *recipe* (how to build
a tiny instance and feed it a batch): adapters by input form, tasks by name. A component without a recipe fails
with a message saying where to add one.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import pytest
from conftest import EXAMPLE_PLUGINS, example_plugin_module

from perceiver import registry
from perceiver.compatibility import BATCHES
from perceiver.plugins import REGISTER_HOOKS
from perceiver.registry import Registry, RegistryError

# ---------------------------------------------------------------------------------------------------------------
#  Registry queries and errors (on a private Registry: no plugins involved)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ToyConfig:
    width: int = 4
    depth: int = 2
    name: str = "toy"


def build_toy(config: ToyConfig) -> Dict[str, Any]:
    return {"width": config.width, "depth": config.depth, "name": config.name}


@pytest.fixture
def reg() -> Registry:
    reg = Registry()
    reg.register("task", "toy", build_toy, config=ToyConfig, description="a toy", inputs=("tokens",))
    return reg


def test_register_get_create_list(reg):
    entry = reg.get("task", "toy")
    assert (entry.kind, entry.name, entry.package, entry.description) == ("task", "toy", "perceiver", "a toy")
    assert entry.metadata["inputs"] == ("tokens",)
    assert reg.create("task", "toy", width=8) == {"width": 8, "depth": 2, "name": "toy"}
    reg.register("task", "toy-large", build_toy, config=ToyConfig)
    reg.register("task", "other", build_toy)
    assert [e.name for e in reg.list("task")] == ["other", "toy", "toy-large"]
    assert [e.name for e in reg.list("task", "toy*")] == ["toy", "toy-large"]
    assert reg.contains("task", "toy") and not reg.contains("task", "nope")
    assert reg.list("adapter") == []


def test_none_overrides_keep_the_defaults(reg):
    """As in timm's create_model: a CLI option left unset (None) never replaces a config default."""
    assert reg.create("task", "toy", width=None, depth=3, name=None) == {"width": 4, "depth": 3, "name": "toy"}


def test_string_targets_are_imported_only_when_built(reg):
    reg.register("adapter", "lazy", "collections:OrderedDict", description="imported on build")
    reg.register("adapter", "broken", "perceiver_no_such_module:Thing")
    assert {e.name for e in reg.list("adapter")} == {"broken", "lazy"}  # listing imports nothing
    assert reg.create("adapter", "lazy") == {}
    with pytest.raises(RegistryError, match="cannot import 'perceiver_no_such_module:Thing'"):
        reg.create("adapter", "broken")


def test_unknown_name_suggests_close_matches(reg):
    with pytest.raises(RegistryError) as error:
        reg.get("task", "tyo")
    assert str(error.value) == "unknown task 'tyo'; did you mean 'toy'? known: toy"
    with pytest.raises(RegistryError, match="unknown kind 'widget'"):
        reg.get("widget", "toy")


def test_unknown_and_impossible_options_are_errors(reg):
    with pytest.raises(RegistryError, match=r"unknown option\(s\) widht for task 'toy' \(did you mean width\?\)"):
        reg.create("task", "toy", widht=3)
    reg.register("task", "plain", build_toy)
    with pytest.raises(RegistryError, match="takes no options"):
        reg.create("task", "plain", width=3)


def test_duplicate_registration_names_both_packages(reg):
    with pytest.raises(RegistryError) as error:
        reg.register("task", "toy", build_toy, package="perceiver-toys")
    assert str(error.value) == "task 'toy' is registered twice: by package 'perceiver' and by 'perceiver-toys'"
    assert reg.get("task", "toy").package == "perceiver"  # the first registration stays


@pytest.mark.parametrize("name", ["", " toy", "two words", "tab\tname"])
def test_invalid_names_are_rejected(reg, name):
    with pytest.raises(RegistryError, match="invalid task name"):
        reg.register("task", name, build_toy)


def test_model_presets_build_the_model_of_their_task(reg):
    reg.register("model", "toy-wide", {"width": 16}, task="toy")
    assert reg.create("model", "toy-wide") == {"width": 16, "depth": 2, "name": "toy"}
    assert reg.create("model", "toy-wide", depth=5, name=None) == {"width": 16, "depth": 5, "name": "toy"}
    with pytest.raises(RegistryError, match="unknown option"):
        reg.create("model", "toy-wide", widht=3)
    reg.register("model", "no-task", {"width": 16})
    reg.register("model", "not-values", build_toy, task="toy")
    for name in ("no-task", "not-values"):
        with pytest.raises(RegistryError, match=f"model preset '{name}' of package 'perceiver' cannot be built"):
            reg.create("model", name)


def test_builtin_model_preset_is_created_by_name():
    from perceiver.tasks.clm import CausalLanguageModel

    model = registry.create("model", "clm-tiny", max_latents=8)
    assert isinstance(model, CausalLanguageModel)
    assert (model.config.max_seq_len, model.config.num_channels, model.config.max_latents) == (64, 32, 8)


def test_unregister_and_reset():
    calls = []
    reg = Registry(on_first_use=lambda r: calls.append(r.register("task", "loaded", build_toy)))
    assert [e.name for e in reg.list("task")] == ["loaded"] and len(calls) == 1
    reg.unregister("task", "loaded")
    assert reg.list("task") == [] and len(calls) == 1  # the first-use callback runs once
    reg.reset()
    assert [e.name for e in reg.list("task")] == ["loaded"] and len(calls) == 2


# ---------------------------------------------------------------------------------------------------------------
#  Every registered component: built on a tiny config, forward + backward
# ---------------------------------------------------------------------------------------------------------------


def _example_plugin_entries() -> List[registry.Entry]:
    """Components of the plugin packages in plugins/, read from source into a scratch registry."""
    entries = []
    for package in EXAMPLE_PLUGINS:
        module = example_plugin_module(package)
        scratch = Registry()
        for hook, kind in REGISTER_HOOKS.items():
            if hasattr(module, hook):
                getattr(module, hook)(register=functools.partial(scratch.register, kind, package=package))
        entries += [entry for kind in registry.KINDS for entry in scratch.list(kind)]
    return entries


def components(kind: str) -> List[Any]:
    entries = registry.list(kind) + [e for e in _example_plugin_entries() if e.kind == kind]
    return [pytest.param(e.name, e.package, id=e.name if e.package == "perceiver" else f"{e.name}[{e.package}]")
            for e in entries]


@pytest.fixture
def registered(add_plugin):
    """``registered(package)`` makes a package's components available in the global registry for this test."""

    def ensure(package: str) -> None:
        if package != "perceiver":
            add_plugin(example_plugin_module(package), package=package)

    return ensure


def run_forward_backward(model, loss_fn: Callable[[Any], Any]) -> float:
    """One training step's forward and backward pass; every parameter must receive a finite gradient."""
    import torch

    model.train()
    loss = loss_fn(model)
    assert loss.dim() == 0 and torch.isfinite(loss), f"loss is {loss}"
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {', '.join(missing[:8])}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {', '.join(bad[:8])}"
    return float(loss.detach())


# -- task recipes: tiny config values, and a loss from a batch --------------------------------------------------


def clm_tiny(**overrides) -> Dict[str, Any]:
    values = dict(max_seq_len=32, max_latents=8, num_channels=16, num_heads=2, num_self_attention_layers=1,
                  cross_attention_dropout=0.25)
    values.update(overrides)
    return values


def clm_shrink(overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A preset made small: sizes capped, everything else (adapter, dropout, ...) kept."""
    caps = clm_tiny()
    small = dict(overrides)
    for key in ("max_seq_len", "max_latents", "num_channels", "num_self_attention_layers"):
        small[key] = min(overrides.get(key, caps[key]), caps[key])
    small["num_heads"] = 2
    return small


def clm_loss(model):
    import torch

    from perceiver.data.corpus import collate_windows
    from perceiver.data.tokenizer import NUM_SPECIAL
    from perceiver.training.metrics import task_metrics

    batch_metrics = task_metrics("clm")

    generator = torch.Generator().manual_seed(0)
    cfg = model.config
    lengths = [cfg.max_seq_len + 1, cfg.max_seq_len // 2 + 1, cfg.max_latents + 3]  # full and left-padded rows
    windows = [torch.randint(NUM_SPECIAL, cfg.vocab_size, (n,), generator=generator) for n in lengths]
    return batch_metrics(model, collate_windows(windows))["loss"]


@dataclass
class TaskRecipe:
    tiny: Callable[..., Dict[str, Any]]
    """Config values of a tiny model (keyword arguments override them)."""
    shrink: Callable[[Dict[str, Any]], Dict[str, Any]]
    """A preset's values made tiny (other values kept)."""
    loss: Callable[[Any], Any]
    """Loss of the model on a made-up batch, through the task's registered ``metrics``."""
    complete: Callable[[Dict[str, Any]], Dict[str, Any]] = dict
    """What the data set adds to a preset's values when training (e.g. the number of classes)."""


IO_CAPS = dict(max_seq_len=32, num_input_channels=16, num_latents=4, num_latent_channels=16,
               num_self_attention_layers_per_block=1, num_cross_attention_layers=2, num_self_attention_blocks=2)
IO_HEADS = ("num_cross_attention_heads", "num_self_attention_heads", "num_decoder_heads")
IO_CHANNELS = tuple(f"num_{part}_{kind}_channels" for part in ("cross_attention", "self_attention", "decoder")
                    for kind in ("qk", "v"))


def io_shrink(overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A Perceiver IO preset made small: sizes capped, 2 heads, qk/v channels = query channels; the rest kept."""
    small = dict(overrides)
    for key, cap in IO_CAPS.items():
        if key in overrides or key in ("max_seq_len", "num_input_channels", "num_latents", "num_latent_channels"):
            small[key] = min(overrides.get(key, cap), cap)
    small.update({key: 2 for key in IO_HEADS})
    small.update({key: None for key in IO_CHANNELS})
    options = dict(overrides.get("adapter_options") or {})
    if "num_frequency_bands" in options:
        options["num_frequency_bands"] = min(options["num_frequency_bands"], 2)
    small["adapter_options"] = options
    return small


def mlm_tiny(**overrides) -> Dict[str, Any]:
    return {**io_shrink({"attention_dropout": 0.0}), **overrides}


def mlm_loss(model):
    import torch

    from perceiver.data.corpus import collate_windows
    from perceiver.data.tokenizer import NUM_SPECIAL
    from perceiver.training.metrics import task_metrics

    batch_metrics = task_metrics("mlm")

    generator = torch.Generator().manual_seed(0)
    lengths = [model.config.max_seq_len + 1, model.config.max_seq_len // 2]
    windows = [torch.randint(NUM_SPECIAL, model.config.vocab_size, (n,), generator=generator) for n in lengths]
    return batch_metrics(model, collate_windows(windows))["loss"]


TINY_IMAGE = [5, 4, 2]


def clf_adapter(overrides: Dict[str, Any]) -> str:
    """The input adapter a clf preset is meant for: named, or the first whose config takes its adapter options."""
    if overrides.get("adapter"):
        return overrides["adapter"]
    options = set(overrides.get("adapter_options") or {})
    for entry in registry.list("adapter"):
        config_class = entry.config_class()
        fields = {f.name for f in dataclasses.fields(config_class)} if config_class else set()
        if entry.metadata.get("input") in registry.get("task", "clf").metadata["inputs"] and options <= fields:
            return entry.name
    raise AssertionError(f"no adapter takes the adapter options {sorted(options)}")


def clf_complete(values: Dict[str, Any]) -> Dict[str, Any]:
    """What a clf data set would supply: the classes, and the image shape for image input."""
    values = {"num_classes": 3, **values}
    values["adapter"] = clf_adapter(values)
    if registry.get("adapter", values["adapter"]).metadata.get("input") == "image":
        values.setdefault("image_shape", TINY_IMAGE)
    return values


def clf_tiny(**overrides) -> Dict[str, Any]:
    return clf_complete({**io_shrink({"attention_dropout": 0.0}), **overrides})


def clf_loss(model):
    import torch

    from perceiver.training.metrics import task_metrics

    batch_metrics = task_metrics("clf")

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 2])
    if model.reads_text:
        input_ids = torch.randint(6, model.config.vocab_size, (2, model.config.max_seq_len), generator=generator)
        pad_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        pad_mask[1, -5:] = True
        batch = (labels, input_ids, pad_mask)
    else:
        batch = (labels, torch.randint(0, 256, (2, *model.config.image_shape), generator=generator).to(torch.uint8))
    return batch_metrics(model, batch)["loss"]


TASK_RECIPES: Dict[str, TaskRecipe] = {
    "clm": TaskRecipe(clm_tiny, clm_shrink, clm_loss),
    "mlm": TaskRecipe(mlm_tiny, io_shrink, mlm_loss),
    "clf": TaskRecipe(clf_tiny, lambda overrides: clf_complete(io_shrink(overrides)), clf_loss, clf_complete),
}
"""Task name -> recipe. A new task needs an entry here."""


def task_recipe(name: str) -> TaskRecipe:
    if name not in TASK_RECIPES:
        pytest.fail(f"task {name!r} has no tiny-config recipe: add one to TASK_RECIPES in tests/test_registry.py")
    return TASK_RECIPES[name]


# -- adapter recipes, by input form ---------------------------------------------------------------------------------


def check_token_adapter(name: str) -> None:
    """A tokens adapter: its own API on a tiny config, then as the adapter of a tiny clm model."""
    import torch

    from perceiver.adapters.base import TokenInputAdapter
    from perceiver.core.position import positions

    adapter = registry.create("adapter", name, vocab_size=262, max_seq_len=32, num_channels=16, num_heads=2)
    assert isinstance(adapter, TokenInputAdapter), f"{type(adapter).__name__} is not a TokenInputAdapter"
    assert adapter.num_input_channels == 16 and adapter.vocab_size == 262
    ids = torch.randint(6, 262, (2, 12))
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[1, :5] = True
    pos = positions(pad, 2, 12)
    assert adapter.embed(ids, pos).shape == (2, 12, 16)
    assert adapter.logits(torch.randn(2, 4, 16)).shape == (2, 4, 262)
    rotary = adapter.rotary(pos)
    if rotary is not None:
        assert rotary[0].shape == rotary[1].shape == (2, 1, 12, adapter.num_rotary_channels)
    model = registry.create("task", "clm", **clm_tiny(adapter=name))
    run_forward_backward(model, clm_loss)


def check_image_adapter(name: str) -> None:
    """An image input adapter: (B, H, W, C) pixels -> (B, H * W, channels), then inside a tiny clf model."""
    import torch

    from perceiver.adapters.base import InputAdapter

    adapter = registry.create("adapter", name, image_shape=TINY_IMAGE, num_frequency_bands=2)
    assert isinstance(adapter, InputAdapter), f"{type(adapter).__name__} is not an InputAdapter"
    x, pad_mask = adapter(torch.randint(0, 256, (2, *TINY_IMAGE)).to(torch.uint8))
    assert x.shape == (2, TINY_IMAGE[0] * TINY_IMAGE[1], adapter.num_input_channels) and pad_mask is None
    model = registry.create("task", "clf", **clf_tiny(adapter=name, adapter_options={"num_frequency_bands": 2}))
    run_forward_backward(model, clf_loss)


def check_output_adapter(name: str) -> None:
    """An output adapter: ``factory(config, input_adapter)`` on a tiny token input adapter, forward and backward."""
    import torch

    from perceiver.adapters.base import OutputAdapter
    from perceiver.tasks.perceiver_io_options import create_adapter

    token_adapter = registry.create("adapter", "text-bytes", vocab_size=262, max_seq_len=32, num_channels=16,
                                    num_heads=2)
    adapter = create_adapter(name, {}, token_adapter, num_channels=16, num_classes=3)
    assert isinstance(adapter, OutputAdapter), f"{type(adapter).__name__} is not an OutputAdapter"
    hidden = torch.randn(2, 5, 16, requires_grad=True)
    out = adapter(hidden)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


ADAPTER_RECIPES: Dict[str, Callable[[str], None]] = {
    "tokens": check_token_adapter,
    "image": check_image_adapter,
    "output": check_output_adapter,
}
"""Adapter input form (metadata ``input``, or ``output`` for output adapters) -> check. A new form needs an entry."""


@pytest.mark.parametrize("name, package", components("adapter"))
def test_adapter_builds_and_trains(name, package, registered):
    registered(package)
    entry = registry.get("adapter", name)
    form = "output" if entry.metadata.get("side") == "output" else entry.metadata.get("input")
    if form not in ADAPTER_RECIPES:
        pytest.fail(f"adapter {name!r} (input {form!r}) has no tiny-config recipe: "
                    "add one to ADAPTER_RECIPES in tests/test_registry.py")
    ADAPTER_RECIPES[form](name)


@pytest.mark.parametrize("name, package", components("task"))
def test_task_builds_and_trains(name, package, registered, monkeypatch):
    registered(package)
    entry = registry.get("task", name)
    recipe = task_recipe(name)
    model = registry.create("task", name, **recipe.tiny())
    assert model.config == entry.build_config(**recipe.tiny())
    run_forward_backward(model, recipe.loss)
    # the registered metrics function computes that loss (a positive count with it), and LitTask trains with it
    target = entry.metadata["metrics"]
    module_name, _, attribute = target.partition(":")
    compute = registry.resolve(target)
    calls = []

    def spy(model, batch):
        out = compute(model, batch)
        calls.append(out)
        return out

    monkeypatch.setattr(importlib.import_module(module_name), attribute, spy)
    loss = recipe.loss(model.eval())
    assert len(calls) == 1 and calls[0]["loss"] is loss and int(calls[0]["count"]) > 0
    from perceiver.training.lightning_module import LitTask

    assert LitTask(recipe.tiny(), task=name).batch_metrics is spy


def parameter_count(task: str, overrides: Dict[str, Any]) -> int:
    """Parameters of a model built on the meta device (no memory, no initialisation cost)."""
    import torch

    entry = registry.get("task", task)
    with torch.device("meta"):
        model = entry.load()(entry.build_config(**overrides))
    return sum(p.numel() for p in model.parameters())


def stated_parameter_count(description: str) -> Tuple[float, float]:
    """A count such as '30.6M' or '44k' in a description -> (value, rounding tolerance); (0, 0) when absent."""
    match = re.search(r"\b(\d+(?:\.(\d+))?)\s*([kM])\b", description)
    if not match:
        return 0.0, 0.0
    scale = {"k": 1e3, "M": 1e6}[match.group(3)]
    decimals = len(match.group(2) or "")
    return float(match.group(1)) * scale, 0.5 * scale * 10.0**-decimals


SMALL_ENOUGH_TO_RUN = 200_000
"""Presets with fewer parameters run as they are; larger ones run shrunk."""


@pytest.mark.parametrize("name, package", components("model"))
def test_model_preset_builds_and_trains(name, package, registered):
    registered(package)
    entry = registry.get("model", name)
    task = entry.metadata.get("task")
    assert registry.contains("task", task), f"preset {name!r} is for unknown task {task!r}"
    assert isinstance(entry.load(), dict), f"preset {name!r} must be a dict of config overrides"
    recipe = task_recipe(task)
    overrides = recipe.complete(entry.load())
    config = registry.get("task", task).build_config(**overrides)  # every key is a config field
    count = parameter_count(task, overrides)
    stated, tolerance = stated_parameter_count(entry.description)
    assert stated, f"{name}: the description must state the parameter count ({count:,}), e.g. '4.1M' or '36.2k'"
    assert abs(count - stated) <= tolerance, f"{name}: description says {stated:,.0f} parameters, has {count:,}"
    adapter = getattr(config, "adapter", None)
    if adapter is not None:
        assert registry.contains("adapter", adapter), f"preset {name!r} uses unknown adapter {adapter!r}"
    runnable = overrides if count < SMALL_ENOUGH_TO_RUN else recipe.shrink(overrides)
    run_forward_backward(registry.create("task", task, **runnable), recipe.loss)


def test_clm_30m_has_30_6m_parameters():
    assert round(parameter_count("clm", registry.get("model", "clm-30m").load()) / 1e6, 1) == 30.6


@pytest.mark.parametrize("name, package", components("dataset"))
def test_dataset_entry_is_consistent(name, package, registered):
    """Data sets are not loaded here (some download); their entry must resolve and name a fitting adapter."""
    registered(package)
    entry = registry.get("dataset", name)
    assert entry.metadata.get("modality"), f"data set {name!r} declares no modality"
    assert callable(entry.load())
    config_class = entry.config_class()
    assert config_class is None or dataclasses.is_dataclass(config_class)
    if config_class is not None:
        config_class()  # defaults are valid
    adapter = entry.metadata.get("adapter")
    if adapter is not None:
        adapter_entry = registry.get("adapter", adapter)
        assert adapter_entry.metadata.get("modality") == entry.metadata["modality"]
    assert entry.metadata.get("batch") in (None, *BATCHES), f"data set {name!r}: unknown batch layout"


@pytest.mark.parametrize("name, package", components("task"))
def test_task_entry_declares_inputs_and_metrics(name, package, registered):
    registered(package)
    entry = registry.get("task", name)
    assert entry.metadata.get("inputs"), f"task {name!r} declares no accepted inputs"
    assert callable(registry.resolve(entry.metadata.get("metrics"))), f"task {name!r} declares no metrics function"
    assert set(entry.metadata.get("batches", ())) <= set(BATCHES), f"task {name!r}: unknown batch layout"
    assert dataclasses.is_dataclass(entry.config_class())


def test_example_plugin_components_are_parametrized():
    """The parametrization really includes the plugin packages' components (guards the helper above)."""
    ids = {p.id for kind in ("adapter", "model", "dataset") for p in components(kind)}
    assert {"mulaw[perceiver-audio]", "audio-clm-tiny[perceiver-audio]", "audio-synth[perceiver-audio]"} <= ids
    assert len([i for i in ids if i.endswith("[perceiver-audio]")]) == 5
