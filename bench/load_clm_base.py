"""Peak memory and time of ``load_model`` for a model of the size of ``krasserm/perceiver-ar-clm-base``.

The model is random (nothing is downloaded): 1280 channels, 10 heads, 20 self-attention layers, 512 latents, 1,024
positions, 32,000 tokens, output norm, no output bias, no absolute position embedding (455M parameters). It is saved
once, in two forms:

- ``export``: this project's export (``config.json`` + ``model.safetensors``);
- ``krasserm``: the layout krasserm's ``perceiver-io`` saves (its ``config.json`` and ``model.safetensors`` with
  its parameter names), which ``load_model`` converts.

Then each form is loaded ``--rounds`` times, each time in a fresh subprocess, alternating the forms, and the script
prints per load the wall time of ``load_model`` and the process's peak RSS (``ru_maxrss``) minus its RSS after the
imports, next to the size of the weights file; then the peak again after every weight has been read once (weights
mapped from the file become resident only when read). A loader that holds one copy of the weights stays near 1.0x;
one that builds a randomly initialised model and then reads the file into a second copy needs about 2x.

    python bench/load_clm_base.py                       # writes the models to a temporary directory
    python bench/load_clm_base.py --dir /tmp/clm-base   # keeps them there (reused by later runs)
    git worktree add /tmp/before <commit>               # to compare with another version of the loader:
    python bench/load_clm_base.py --code before=/tmp/before --code after=.   # interleaved, same saved models
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLM_BASE = dict(
    vocab_size=32000, max_seq_len=1024, max_latents=512, num_channels=1280, num_heads=10,
    num_self_attention_layers=20, cross_attention_widening_factor=4,
    self_attention_widening_factor=4, output_norm=True, output_bias=False, abs_pos_emb=False,
)
"""krasserm ``model_config`` values of ``krasserm/perceiver-ar-clm-base`` (the others at krasserm's defaults)."""


def krasserm_config() -> dict:
    return {"model_type": "perceiver-ar-causal-language-model", "model_config": dict(CLM_BASE),
            "architectures": ["PerceiverCausalLanguageModel"]}


def krasserm_state(model) -> dict:
    """The model's weights under krasserm's parameter names (the inverse of the converter's name map; values are
    not permuted, which only matters for what the model computes, not for loading)."""
    from perceiver.hf.krasserm import PREFIX, _attention_layer_map

    own = model.state_dict()
    names = {"input_adapter.txt_embedding": "adapter.token_embedding", "out_norm": "out_norm"}
    names.update(_attention_layer_map("cross_attention", "perceiver_ar.cross_attention", cross=True))
    for i in range(model.config.num_self_attention_layers):
        names.update(_attention_layer_map(f"self_attention.{i}", f"perceiver_ar.self_attention.layers.{i}",
                                          cross=False))
    state = {}
    for source, target in names.items():
        for param in ("weight", "bias"):
            if f"{target}.{param}" in own:
                state[f"{PREFIX}{source}.{param}"] = own[f"{target}.{param}"].contiguous()
    assert len(state) == len(own), sorted(set(own) - {v for v in names.values()})
    return state


def write_models(root: Path) -> dict:
    """Write both forms under ``root`` unless they are there; returns {form: directory}."""
    paths = {"export": root / "export", "krasserm": root / "krasserm"}
    if all((p / "model.safetensors").exists() for p in paths.values()):
        return paths
    import torch
    from safetensors.torch import save_file

    from perceiver.checkpoint import save_model
    from perceiver.hf.krasserm import causal_lm_config
    from perceiver.tasks.clm import CausalLanguageModel

    torch.manual_seed(0)
    model = CausalLanguageModel(causal_lm_config(CLM_BASE)).eval()
    print(f"built a random model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)
    save_model(model, paths["export"], overwrite=True)
    paths["krasserm"].mkdir(parents=True, exist_ok=True)
    save_file(krasserm_state(model), str(paths["krasserm"] / "model.safetensors"), metadata={"format": "pt"})
    (paths["krasserm"] / "config.json").write_text(json.dumps(krasserm_config(), indent=2))
    return paths


def measure(path: str) -> None:
    """In this (fresh) process: load ``path`` and print a JSON line with time and memory."""
    import resource

    import torch  # noqa: F401  (imported before the baseline so that it is not counted)

    import perceiver.checkpoint  # noqa: F401
    import perceiver.hf.krasserm  # noqa: F401
    import perceiver.tasks.clm  # noqa: F401

    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    base = rss()
    start = time.perf_counter()
    model = perceiver.checkpoint.load_model(path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after = rss()
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():  # read every weight: a loader that maps the file lazily has it all resident now
        sum(float(p.sum()) for p in model.parameters())
    touched = rss()
    peak_touched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak, "base": base, "after": after, "touched": touched,
                      "peak_touched": peak_touched, "params": params}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to keep the two saved models (default: a temporary directory)")
    parser.add_argument("--rounds", type=int, default=2, help="loads of each form, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                        help="load with the perceiver package of DIR (repeatable; default: the one importable here)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        import torch

        torch.set_num_threads(args.threads)
        return measure(args.measure)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        paths = write_models(root)
        size = (paths["export"] / "model.safetensors").stat().st_size
        print(f"weights file: {size / 2**30:.2f} GiB; load average {os.getloadavg()[0]:.2f}")
        codes = [tuple(code.split("=", 1)) for code in args.code] or [("", None)]
        print(f"{'code':<8} {'form':<9} {'load s':>7} {'peak RSS - base':>16} {'x weights':>10} {'RSS after':>10} "
              f"{'peak after reading all weights':>31}")
        for _ in range(args.rounds):
            for label, code in codes:
                for form, path in paths.items():
                    env = dict(os.environ)
                    if code is not None:
                        env["PYTHONPATH"] = str(Path(code).resolve())
                    out = subprocess.run(
                        [sys.executable, __file__, "--measure", str(path), "--threads", str(args.threads)],
                        check=True, capture_output=True, text=True, env=env,
                    ).stdout.strip().splitlines()[-1]
                    r = json.loads(out)
                    grown = r["peak"] - r["base"]
                    touched = r["peak_touched"] - r["base"]
                    print(f"{label:<8} {form:<9} {r['seconds']:>7.2f} {grown / 2**30:>12.2f} GiB {grown / size:>9.2f}x "
                          f"{(r['after'] - r['base']) / 2**30:>6.2f} GiB {touched / 2**30:>19.2f} GiB "
                          f"({touched / size:.2f}x)", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
