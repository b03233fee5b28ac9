"""Building a model whose weights come from a file without first giving it random ones.

A model built the usual way allocates and initialises every parameter; loading saved weights then reads a second
copy, so a loader would briefly hold the weights twice (and spend seconds drawing random numbers it throws away).
Built inside :func:`parameters_on_meta`, a model's parameters live on PyTorch's ``meta`` device (shapes, no
memory), while its buffers (rotary frequencies, Fourier features, normalisation constants: computed, not saved)
are real. :func:`assign_weights` then makes the loaded tensors the parameters themselves, with no copy.
``bench/load_clm_base.py`` measures the difference.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

from torch import Tensor, nn

_assigning = False
"""True while :func:`assign_weights` runs: the weights it gives a model (inside :func:`parameters_on_meta`, as a
converter that builds and fills a model in one function does) are kept where they are."""


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within the block, every parameter a module registers is moved to the ``meta`` device (its ``requires_grad``
    kept); buffers and plain tensors are untouched. Initialisers run on the meta tensors and do nothing.

    It replaces ``nn.Module.register_parameter`` for the duration of the block, so models built by other threads at
    the same time get meta parameters too: use it only around the construction of a model that is loaded next.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param) -> None:
        if param is not None and param.device.type != "meta" and not _assigning:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def has_meta_parameters(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def assign_weights(model: nn.Module, state: Dict[str, Tensor]) -> None:
    """Load ``state`` (every key of ``model.state_dict()``, matching shapes: the caller checks) into ``model``.

    A model with meta parameters (built in :func:`parameters_on_meta`) takes the tensors of ``state`` as its
    parameters, converted to the dtype the model declared (no copy when it is the same); parameters that the model
    shares between modules stay shared. Any other model copies them in (``load_state_dict``).
    """
    if not has_meta_parameters(model):
        model.load_state_dict(state)
        return
    own = model.state_dict(keep_vars=True)
    first_name: Dict[int, str] = {}
    shared = {}
    for name, value in own.items():  # a parameter reachable under several names is assigned once, then re-linked
        if id(value) in first_name:
            shared[name] = first_name[id(value)]
        else:
            first_name[id(value)] = name
    typed = {name: state[name].to(own[name].dtype) for name in own if name not in shared}
    global _assigning
    _assigning = True
    try:
        model.load_state_dict(typed, strict=False, assign=True)
        for name, source in shared.items():
            _set(model, name, _get(model, source))
    finally:
        _assigning = False
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # e.g. a buffer a module computed from its (meta) parameters while it was built
        raise RuntimeError(f"{type(model).__name__}: left without values after loading: {', '.join(left[:3])}")


def _get(model: nn.Module, name: str) -> Tensor:
    module_name, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module_name), attr)


def _set(model: nn.Module, name: str, value: Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(module_name), attr, value)


__all__ = ["assign_weights", "has_meta_parameters", "parameters_on_meta"]
