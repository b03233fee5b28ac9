"""Lower-precision and quantized inference: ``--dtype`` and ``--quantize`` of the commands, ``load_model(dtype=)``.

* :func:`cast` stores the weights in ``bfloat16`` or ``float16``. The decoding cache takes the dtype of the weights
  (``PerceiverAR.empty_cache``), so it is stored in that dtype too; this is not autocast over fp32 weights. The
  causal LM computes its logits in fp32 (``CausalLanguageModel`` casts the normalised hidden states up before the
  output projection), so sampling and bits per byte see fp32 logits.
* :func:`quantize_int8` replaces every ``nn.Linear`` by a dynamically quantized one (int8 weights, activations
  quantized per call; ``torch.ao.quantization.quantize_dynamic``, CPU only). The core calls such layers instead of
  reading their weights (``perceiver.core.linear.is_plain``). The token embedding and the tied output projection stay
  fp32. See the module ``README``/docs for why this backend and not torchao.
* :func:`compile_decoding` ``torch.compile``s the cached decoding step of a causal LM (``--compile``).
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Names accepted by ``--dtype`` / ``load_model(dtype=)``."""

QUANTIZATIONS = ("int8",)
"""Names accepted by ``--quantize``."""


class InferenceSetupError(ValueError):
    """A dtype or quantization that cannot be applied to this model or device (the message says why)."""


def resolve_dtype(dtype) -> Optional[torch.dtype]:
    """``"bfloat16"`` / ``torch.bfloat16`` / ``None`` -> a ``torch.dtype`` (or None); anything else raises."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise InferenceSetupError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def float16_is_slow(device: str) -> bool:
    """True on a CPU without native float16 arithmetic (no AVX512-FP16 / AMX-FP16): torch then converts every
    float16 product to fp32 and back, which is slower than fp32."""
    if torch.device(device).type != "cpu":
        return False
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in capability or "FP16" in capability:
        return False
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return True
    return not ({"avx512_fp16", "amx_fp16"} & set(flags))


def cast(model: nn.Module, dtype, device: str = "cpu") -> nn.Module:
    """Store the floating-point parameters and buffers of ``model`` in ``dtype`` (in place; returns ``model``).

    Warns when ``dtype`` is float16 on a CPU that has no float16 arithmetic (:func:`float16_is_slow`).
    """
    dtype = resolve_dtype(dtype)
    if dtype is None or dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    if dtype == torch.float16 and float16_is_slow(device):
        warnings.warn(
            "float16 on this CPU is emulated (no AVX512-FP16/AMX): slower than float32; use --dtype bfloat16",
            UserWarning,
            stacklevel=2,
        )
    return model.to(dtype)


def quantize_int8(model: nn.Module, device: str = "cpu") -> nn.Module:
    """Replace the ``nn.Linear`` layers of ``model`` by dynamically quantized int8 ones (CPU inference only).

    The model must be fp32 and on the CPU; raises :class:`InferenceSetupError` otherwise or when it has no
    linear layers to quantize.
    """
    if torch.device(device).type != "cpu":
        raise InferenceSetupError(f"--quantize int8 runs on the CPU only, not on {device!r}; use --device cpu")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    if not linears:
        raise InferenceSetupError(f"{type(model).__name__} has no nn.Linear layers that int8 quantization can replace")
    if any(m.weight.dtype != torch.float32 for m in linears):
        raise InferenceSetupError("--quantize int8 needs float32 weights; drop --dtype or use --dtype float32")
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None
    if engine is None:
        raise InferenceSetupError(f"this torch build has no int8 CPU kernels (quantized engines: {engines})")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)


def compile_decoding(model: nn.Module) -> nn.Module:
    """``torch.compile`` the cached decoding step of a causal LM (``model.perceiver_ar.forward_cached``), in place.

    The step is compiled on its first calls (the shapes that change between steps, such as the filled length of the
    cache, become dynamic on the second compilation) and reused by every later ``generate`` call of the model; the
    weights are those of the eager model. On a CPU, inductor builds its kernels with the C++ compiler on the PATH.
    See docs/inference.md for what it gives (off by default: it did not pay in the measurements there).
    Raises :class:`InferenceSetupError` for a model without a cached decoding step or without a C++ compiler.
    """
    import shutil

    core = getattr(model, "perceiver_ar", None)
    if core is None or not hasattr(core, "forward_cached"):
        raise InferenceSetupError(f"--compile applies to causal LMs (clm); {type(model).__name__} has no decoding step")
    if next(model.parameters()).device.type == "cpu" and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        raise InferenceSetupError("--compile on the CPU needs a C++ compiler (c++, g++ or clang++) on the PATH")
    if not getattr(core.forward_cached, "_perceiver_compiled", False):
        step = torch.compile(core.forward_cached)  # shapes that change between steps become dynamic on recompiling
        step._perceiver_compiled = True
        core.forward_cached = step  # an instance attribute: the class and other models stay eager
    return model


def check(dtype=None, quantize: Optional[str] = None) -> None:
    """Raise :class:`InferenceSetupError` now (before a model is loaded) if :func:`prepare` would refuse the names."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InferenceSetupError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    dtype = resolve_dtype(dtype)
    if quantize is not None and dtype not in (None, torch.float32):
        raise InferenceSetupError("--quantize int8 keeps float32 activations; it cannot be combined with --dtype "
                                  f"{str(dtype).replace('torch.', '')}")


def prepare(
    model: nn.Module, dtype=None, quantize: Optional[str] = None, device: str = "cpu", compile: bool = False
) -> nn.Module:
    """Apply ``dtype`` (:func:`cast`), ``quantize`` (:func:`quantize_int8`) and ``compile`` (:func:`compile_decoding`)
    to an eval-mode model."""
    check(dtype, quantize)
    model = cast(model, dtype, device)
    if quantize == "int8":
        model = quantize_int8(model, device)
    if compile:
        model = compile_decoding(model)
    return model.eval()
