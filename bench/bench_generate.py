#!/usr/bin/env python
"""Decoding throughput of the W3 model (clm-30m sizes: 4096 bytes, 512 latents, 512 channels, 8 layers, 30.6M
parameters, random weights) with the KV cache: new tokens/s for each batch size, dtype and quantization.

Every batch decodes ``--tokens`` new tokens from ``--prompt-len``-byte prompts (``num_latents=7``, ``top_k=10``,
one generator per row as ``perceiver generate --prompts-file`` uses); prompts in a batch have different lengths
(left padding), as real prompt files do. Prints one line per case and, for each dtype, the speed-up of every batch
size over batch 1 (total new tokens/s). Each case is timed ``--repeats`` times after one warm-up; the best is kept.

    python bench/bench_generate.py                                # batch 1 and 16, fp32
    python bench/bench_generate.py --batch-sizes 1,4,16 --dtypes float32,bfloat16 --quantize
    python bench/bench_generate.py --batch-sizes 1 --compile     # eager and torch.compile'd steps side by side

With ``--compile`` every dtype also runs with the decoding step compiled (``perceiver.inference.compile_decoding``,
as ``perceiver generate --compile``); the warm-up call then includes the compilation, printed as "first call".
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16,float16")
    parser.add_argument("--quantize", action="store_true", help="add int8 (fp32 activations) cases")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd decoding steps")
    args = parser.parse_args(argv)

    import torch

    from perceiver.inference import prepare
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    config = CausalLanguageModelConfig(max_seq_len=4096, max_latents=512, num_channels=512, num_heads=8,
                                       num_self_attention_layers=8, cross_attention_dropout=0.5)
    cases = [(dtype, None, False) for dtype in args.dtypes.split(",")]
    if args.quantize:
        cases.append(("float32", "int8", False))
    if args.compile:
        cases += [(dtype, quantize, True) for dtype, quantize, _ in list(cases)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, load average before: {_load_avg():.1f}")
    for dtype, quantize, compiled in cases:
        torch.manual_seed(0)
        torch._dynamo.reset()  # each compiled case compiles afresh (and stays under the recompilation limit)
        model = prepare(CausalLanguageModel(config).eval(), dtype=dtype, quantize=quantize, compile=compiled)
        label = f"{dtype}{' int8' if quantize else ''}{' compiled' if compiled else ''}"
        rates = {}
        for batch in batch_sizes:
            lengths = [args.prompt_len - (i * 7) % (args.prompt_len // 2) for i in range(batch)]
            prompt = torch.randint(6, 262, (batch, max(lengths)))
            pad = torch.arange(max(lengths))[None, :] < (max(lengths) - torch.tensor(lengths))[:, None]
            generators = [torch.Generator().manual_seed(i) for i in range(batch)]

            def run():
                model.generate(prompt, pad, num_tokens=args.tokens, num_latents=7, top_k=10, generator=generators)

            start = time.perf_counter()
            run()  # warm-up (and compilation)
            first = time.perf_counter() - start
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            rates[batch] = batch * args.tokens / best
            print(f"{label:>16} batch {batch:>3}: {best:7.3f} s for {args.tokens} tokens/row, "
                  f"{rates[batch]:8.1f} new tokens/s, {1000 * best / args.tokens:6.2f} ms/step, first call "
                  f"{first:.1f} s (load {_load_avg():.1f})", flush=True)
        base = rates.get(1)
        if base and len(rates) > 1:
            print(f"{label:>16} speed-up over batch 1: "
                  + ", ".join(f"batch {b}: {r / base:.2f}x" for b, r in rates.items() if b != 1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
