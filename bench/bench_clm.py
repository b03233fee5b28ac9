#!/usr/bin/env python
"""Standalone throughput / memory benchmark of the Perceiver AR causal LM (``perceiver.tasks.clm``).

For each model config, device and precision it prints
  * training: seconds per step and latent (loss) tokens/s of a full step (zero_grad + forward with
    prefix_len = max_seq_len - max_latents + cross-entropy over the latents + backward + torch.optim.Adam step),
    on random token ids, pad_mask=None;
  * peak memory: CPU ``ru_maxrss`` of the case's process (includes Python + torch + imports, reported
    separately as "RSS after import"), or ``torch.cuda.max_memory_allocated`` on CUDA;
  * generation: new tokens/s of ``model.generate(prompt, num_tokens, num_latents=7, top_k=10)`` with and without
    the KV cache (64-token prompt, batch 1, eval mode).

Every (config, device, precision) case runs in its own subprocess so that peak memory figures do not mix.
Generation runs before training inside a case, so the CPU peak (a process-wide high-water mark) is the training
peak. bf16 means mixed precision: ``torch.autocast(device_type, dtype=torch.bfloat16)`` around the forward pass
(and around ``generate``), fp32 weights and optimizer state.

Examples::

    python bench/bench_clm.py --quick                       # both configs, fp32 + bf16, CPU (+ CUDA if present)
    python bench/bench_clm.py --configs seed --precision fp32 --steps 10 --threads 2
    python bench/bench_clm.py --device cuda --configs small --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # name: model sizes + training batch size
    "seed": dict(max_seq_len=4096, max_latents=512, num_channels=512, num_layers=8, batch_size=2),
    "small": dict(max_seq_len=1024, max_latents=256, num_channels=256, num_layers=4, batch_size=8),
}
COMMON = dict(vocab_size=262, num_heads=8, widening_factor=4, cross_attention_dropout=0.5)
PROMPT_LEN, NUM_LATENTS, TOP_K = 64, 7, 10
PREFIX = "BENCH_CLM "


# ---------------------------------------------------------------------------------------------------------------------
#  One case (runs in a subprocess)
# ---------------------------------------------------------------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(case: dict) -> dict:
    import torch
    import torch.nn.functional as F

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    device = torch.device(case["device"])
    cuda = device.type == "cuda"
    rss_import = _rss_mib()
    sizes = {**COMMON, **CONFIGS[case["config"]]}
    V = sizes["vocab_size"]

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def autocast():
        if case["precision"] == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def build():
        torch.manual_seed(0)
        cfg = CausalLanguageModelConfig(
            vocab_size=V,
            max_seq_len=sizes["max_seq_len"],
            max_latents=sizes["max_latents"],
            num_channels=sizes["num_channels"],
            num_heads=sizes["num_heads"],
            num_self_attention_layers=sizes["num_layers"],
            cross_attention_widening_factor=sizes["widening_factor"],
            self_attention_widening_factor=sizes["widening_factor"],
            cross_attention_dropout=sizes["cross_attention_dropout"],
        )
        return CausalLanguageModel(cfg).to(device)

    rec = {
        **case,
        "torch": torch.__version__,
        "threads_used": torch.get_num_threads(),
        "rss_after_import_mib": round(rss_import, 1),
    }
    if cuda:
        rec["gpu"] = torch.cuda.get_device_name(device)

    # ---- generation (first, so that the CPU high-water mark afterwards is the training one) ----------------------
    if case["gen_tokens"] > 0:
        model = build().eval()
        gen = torch.Generator().manual_seed(1234)
        prompt = torch.randint(0, V, (1, PROMPT_LEN), generator=gen).to(device)
        for use_cache in (True, False):
            times = []
            for i in range(1 + case["gen_steps"]):
                n = min(case["gen_tokens"], 16) if i == 0 else case["gen_tokens"]  # short warm-up call
                torch.manual_seed(100 + i)
                sync()
                t0 = time.perf_counter()
                with torch.inference_mode(), autocast():
                    out = model.generate(
                        prompt, num_tokens=n, num_latents=NUM_LATENTS, top_k=TOP_K, use_cache=use_cache
                    )
                sync()
                if i > 0:
                    times.append(time.perf_counter() - t0)
                assert out.shape == (1, n), out.shape
            med = statistics.median(times)
            key = "gen_cache" if use_cache else "gen_nocache"
            rec[key + "_s"] = round(med, 4)
            rec[key + "_tokens_per_s"] = round(case["gen_tokens"] / med, 2)
        del model

    # ---- training ------------------------------------------------------------------------------------------------
    if case["steps"] > 0:
        model = build().train()
        rec["params"] = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        b, n, M = sizes["batch_size"], sizes["max_seq_len"], sizes["max_latents"]
        prefix_len = n - M
        gen = torch.Generator().manual_seed(1234)
        batches = [torch.randint(0, V, (b, n + 1), generator=gen).to(device) for _ in range(4)]
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for i in range(case["warmup"] + case["steps"]):
            tok = batches[i % len(batches)]
            x, y = tok[:, :-1], tok[:, prefix_len + 1 :]
            sync()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = model(x, prefix_len=prefix_len)
            loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
            loss.backward()
            opt.step()
            sync()
            dt = time.perf_counter() - t0
            losses.append(float(loss.detach()))
            if i >= case["warmup"]:
                times.append(dt)
        med = statistics.median(times)
        rec.update(
            batch_size=b,
            train_s_per_step=round(med, 4),
            train_min_s=round(min(times), 4),
            train_tokens_per_s=round(b * M / med, 1),
            loss_first=round(losses[0], 3),
            loss_last=round(losses[-1], 3),
        )
        if cuda:
            rec["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            rec["peak_mem_kind"] = "cuda max_memory_allocated"
    if not cuda:
        rec["peak_mem_mib"] = round(_peak_rss_mib(), 1)
        rec["peak_mem_kind"] = "ru_maxrss"
    return rec


# ---------------------------------------------------------------------------------------------------------------------
#  Driver
# ---------------------------------------------------------------------------------------------------------------------


def busy_cores(interval: float = 1.0) -> float:
    """CPU cores kept busy by *any* process over ``interval`` seconds (from /proc/stat; nan where unavailable).
    Run before a case, while this driver sleeps: anything well above 0 means other processes compete for the CPU
    and the timings of the case will be inflated (with several torch threads, badly: they wait for each other)."""

    def read():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v[:8])  # user nice system irq softirq steal, total

    try:
        b0, t0 = read()
        time.sleep(interval)
        b1, t1 = read()
    except (OSError, ValueError):
        return float("nan")
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def _fmt(x, nd=1):
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def print_table(recs):
    print()
    print(
        "| config | device | precision | s/step | train latent tokens/s | peak MiB (kind) | RSS after import MiB "
        "| gen cached tok/s | gen no-cache tok/s | cache speedup | loss first→last |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in recs:
        if "error" in r:
            print(f"| {r['config']} | {r['device']} | {r['precision']} | error: {r['error']} |||||||")
            continue
        c, nc = r.get("gen_cache_tokens_per_s"), r.get("gen_nocache_tokens_per_s")
        speedup = f"{c / nc:.1f}x" if c and nc else "–"
        loss = f"{r['loss_first']}→{r['loss_last']}" if "loss_first" in r else "–"
        print(
            f"| {r['config']} | {r['device']} | {r['precision']} | {_fmt(r.get('train_s_per_step'), 3)} | "
            f"{_fmt(r.get('train_tokens_per_s'))} | {_fmt(r.get('peak_mem_mib'), 0)} ({r.get('peak_mem_kind')}) | "
            f"{_fmt(r.get('rss_after_import_mib'), 0)} | {_fmt(c)} | {_fmt(nc)} | {speedup} | {loss} |"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="seed,small", help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--device", default="auto", help="comma list of cpu, cuda; 'auto' = cpu plus cuda when available")
    ap.add_argument(
        "--precision", default="fp32,bf16", help="comma list of fp32, bf16 (bf16 = autocast mixed precision)"
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="timed training steps (default 10; --quick 3; 0 = no training)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed training steps first (default 2; --quick 1)")
    ap.add_argument(
        "--gen-tokens",
        type=int,
        default=None,
        help="new tokens per generate() call (default 256; --quick 64; 0 = skip)",
    )
    ap.add_argument(
        "--gen-steps", type=int, default=None, help="timed generate() calls per mode (default 2; --quick 1)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument(
        "--quick", action="store_true", help="few steps and 64 generated tokens (a couple of minutes on CPU)"
    )
    ap.add_argument("--json", default=None, metavar="FILE", help="also append the records as JSON lines to FILE")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print its record
    args = ap.parse_args(argv)

    if args.case:
        print(PREFIX + json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0

    steps = args.steps if args.steps is not None else (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    gen_tokens = args.gen_tokens if args.gen_tokens is not None else (64 if args.quick else 256)
    gen_steps = args.gen_steps if args.gen_steps is not None else (1 if args.quick else 2)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    for p in precisions:
        if p not in ("fp32", "bf16"):
            ap.error(f"unknown precision {p!r}; use fp32 and/or bf16")
    if args.device == "auto":
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.device.split(",") if d.strip()]

    env = dict(os.environ)
    if args.threads:
        env.setdefault("OMP_NUM_THREADS", str(args.threads))
        env.setdefault("MKL_NUM_THREADS", str(args.threads))
    recs = []
    for device in devices:
        for config in configs:
            for precision in precisions:
                case = dict(
                    config=config,
                    device=device,
                    precision=precision,
                    steps=steps,
                    warmup=warmup,
                    gen_tokens=gen_tokens,
                    gen_steps=gen_steps,
                    threads=args.threads,
                )
                load = busy_cores()
                print(
                    f"[bench_clm] {config} {device} {precision} ... (other load before: {load:.2f} cores)",
                    file=sys.stderr,
                    flush=True,
                )
                if load > 0.25:
                    print(
                        f"[bench_clm]   WARNING: other processes keep {load:.2f} CPU cores busy; timings will be "
                        "inflated",
                        file=sys.stderr,
                        flush=True,
                    )
                t0 = time.perf_counter()
                cmd = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(case)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
                    lines = [line for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
                    if lines:
                        rec = json.loads(lines[-1][len(PREFIX) :])
                    else:
                        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                        rec = {**case, "error": f"exit {proc.returncode}: {err}"}
                except subprocess.TimeoutExpired:
                    rec = {**case, "error": f"timeout after {args.timeout}s"}
                rec["wall_s"] = round(time.perf_counter() - t0, 1)
                rec["other_load_cores_before"] = round(load, 2)
                print(f"[bench_clm]   {json.dumps(rec)}", file=sys.stderr, flush=True)
                recs.append(rec)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")

    print_table(recs)
    busy = [r["other_load_cores_before"] for r in recs if r.get("other_load_cores_before", 0) > 0.25]
    if busy:
        print(
            f"\nWARNING: {len(busy)} case(s) started while other processes kept up to {max(busy):.2f} CPU cores busy; "
            "their timings are inflated. Re-run on an idle machine."
        )
    print()
    print(
        f"training: {steps} timed steps after {warmup} warm-up, batch {{seed: 2, small: 8}}, "
        f"torch.optim.Adam(lr=2e-4); generation: {PROMPT_LEN}-token prompt, {NUM_LATENTS} initial latents, "
        f"{gen_tokens} new tokens, top-k {TOP_K}, "
        f"batch 1, median of {gen_steps} call(s). peak MiB on CPU is the case process's ru_maxrss (includes the "
        "RSS after import)."
    )
    return 1 if any("error" in r for r in recs) else 0


if __name__ == "__main__":
    sys.exit(main())
