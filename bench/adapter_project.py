"""Benchmark-harness adapter for this project's models (``perceiver`` package in this repository).

Implements the adapter protocol of the separate bench-anchors harness (``workloads.py`` there): the harness owns
inputs, loss, ``torch.optim.Adam`` and timing; this module only builds models and returns logits / new tokens.
Run it in the project's virtualenv, e.g. from a bench-anchors checkout::

    python3 run.py --impl krasserm,project=/path/to/.venv/bin/python:/path/to/bench/adapter_project.py \
        --workload w1,w2,w3 --rounds 2 --out /tmp/bench_results.jsonl

Workloads and variants
  clm (W1, W2)   ``perceiver.tasks.clm.CausalLanguageModel`` with the workload's sizes, ``pad_mask=None``.
                 "default": fp32 (the comparison against the anchors).
                 "bf16":    forward under ``torch.autocast(device_type="cpu", dtype=torch.bfloat16)``; logits are
                            returned as fp32, weights and Adam state stay fp32 (mixed precision, extra row).
  generate (W3)  ``CausalLanguageModel.generate(prompt, num_tokens, num_latents, top_k)`` in eval mode.
                 "cache":      ``use_cache=True`` (the project's preallocated key/value cache), fp32.
                 "nocache":    ``use_cache=False`` (full recompute for every token), fp32.
                 "cache-bf16": ``use_cache=True``, weights and cache stored in bf16 (``perceiver.inference.prepare``,
                               as ``perceiver generate --dtype bfloat16``); logits in fp32.
                 "cache-int8": ``use_cache=True``, linear layers dynamically quantized to int8
                               (``perceiver generate --quantize int8``).
  mlm (W4)       ``perceiver.tasks.mlm.MaskedLanguageModel`` with the workload's sizes (the task's defaults are the
                 W4 sizes), logits of all positions, ``pad_mask=None``. "default": fp32.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import sys

import torch

# the harness clears PYTHONPATH: import the ``perceiver`` package of the checkout this file belongs to
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NAME = "project"

_VARIANTS = {
    "clm": ["default", "bf16"],
    "generate": ["cache", "nocache", "cache-bf16", "cache-int8"],
    "mlm": ["default"],  # W4
}


def versions():
    out = {}
    for pkg in ("perceiver", "torch", "pytorch-lightning", "transformers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        import os
        import subprocess

        import perceiver

        root = os.path.dirname(os.path.dirname(os.path.abspath(perceiver.__file__)))
        out["perceiver_path"] = root
        git = ["git", "-C", root]
        out["git_commit"] = (
            subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
        )
        dirty = subprocess.run(
            git + ["status", "--porcelain", "--", "perceiver"], capture_output=True, text=True
        ).stdout
        out["git_dirty_perceiver"] = bool(dirty.strip())
    except Exception:  # noqa: BLE001
        pass
    return out


def variants(kind):
    return list(_VARIANTS.get(kind, []))


def notes(kind, variant):
    if kind == "clm":
        prec = "bf16 autocast (CPU), fp32 weights/optimizer" if variant == "bf16" else "fp32"
        return (
            "perceiver.tasks.clm.CausalLanguageModel, CausalLanguageModelConfig defaults otherwise (text-bytes "
            "adapter: abs pos emb, rotary on half of each head, tied logits + output bias; qkv/MLP biases; SDPA "
            "attention); "
            f"pad_mask=None; {prec}"
        )
    if kind == "generate":
        cache = not variant.startswith("nocache")
        prec = {"bf16": "bf16 weights and KV cache, fp32 logits", "int8": "int8 dynamic-quantized linears"}
        prec = prec.get(variant.rsplit("-", 1)[-1], "fp32")
        return f"CausalLanguageModel.generate(num_latents=7, top_k=10, temperature=1, use_cache={cache}); {prec}"
    if kind == "mlm":
        return (
            "perceiver.tasks.mlm.MaskedLanguageModel (text-bytes adapter, tied logits + output bias, SDPA / CPU "
            "attention-dropout path, row-sparse decoder backward: only positions whose logits get gradient); fp32"
        )
    return ""


def _autocast(variant):
    if variant.endswith("bf16"):
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _clm_config(spec):
    from perceiver.tasks.clm import CausalLanguageModelConfig

    return CausalLanguageModelConfig(
        vocab_size=spec.vocab_size,
        max_seq_len=spec.max_seq_len,
        max_latents=spec.max_latents,
        num_channels=spec.num_channels,
        num_heads=spec.num_heads,
        num_self_attention_layers=spec.num_layers,
        cross_attention_widening_factor=spec.widening_factor,
        self_attention_widening_factor=spec.widening_factor,
        cross_attention_dropout=spec.cross_attention_dropout,
    )


def build_clm(spec, variant):
    from perceiver.tasks.clm import CausalLanguageModel

    model = CausalLanguageModel(_clm_config(spec)).train()
    model._bench_variant = variant
    return model


def clm_logits(model, x, prefix_len):
    variant = getattr(model, "_bench_variant", "default")
    with _autocast(variant):
        logits = model(x, prefix_len=prefix_len, pad_mask=None)
    return logits.float()


def build_generator(spec, variant):
    from perceiver.inference import prepare
    from perceiver.tasks.clm import CausalLanguageModel

    model = CausalLanguageModel(_clm_config(spec.model)).eval()
    use_cache = not variant.startswith("nocache")
    dtype = "bfloat16" if variant.endswith("bf16") else None
    model = prepare(model, dtype=dtype, quantize="int8" if variant.endswith("int8") else None)

    def generate(prompt):
        with torch.no_grad():
            return model.generate(
                prompt,
                num_tokens=spec.new_tokens,
                num_latents=spec.num_latents,
                top_k=spec.top_k,
                temperature=1.0,
                use_cache=use_cache,
            )

    return model, generate


def _mlm_config(spec):
    from perceiver.tasks.mlm import MaskedLanguageModelConfig

    return MaskedLanguageModelConfig(
        vocab_size=spec.vocab_size,
        max_seq_len=spec.seq_len,
        num_input_channels=spec.num_input_channels,
        num_latents=spec.num_latents,
        num_latent_channels=spec.num_latent_channels,
        num_cross_attention_heads=spec.num_heads,
        num_cross_attention_qk_channels=spec.num_qk_channels,
        num_cross_attention_v_channels=spec.num_latent_channels,
        num_self_attention_heads=spec.num_heads,
        num_self_attention_qk_channels=spec.num_qk_channels,
        num_self_attention_v_channels=spec.num_latent_channels,
        num_self_attention_layers_per_block=spec.num_layers,
        cross_attention_widening_factor=spec.widening_factor,
        self_attention_widening_factor=spec.widening_factor,
        num_decoder_heads=spec.num_heads,
        num_decoder_qk_channels=spec.num_qk_channels,
        num_decoder_v_channels=spec.num_input_channels,
        decoder_widening_factor=spec.widening_factor,
        attention_dropout=spec.dropout,
    )


def build_mlm(spec, variant):
    from perceiver.tasks.mlm import MaskedLanguageModel

    return MaskedLanguageModel(_mlm_config(spec)).train()


def mlm_logits(model, x):
    return model(x)
