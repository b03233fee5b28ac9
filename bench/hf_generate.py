"""Greedy decoding through transformers' ``generate`` (``perceiver.hf.auto``, every step recomputed) vs the project's
own ``CausalLanguageModel.generate`` (key/value cache, what ``perceiver generate`` runs), same model, prompt and
number of tokens, alternating rounds. Prints seconds per run and new tokens/s of each, and checks that both return
the same tokens.

    python bench/hf_generate.py                      # clm-tiny-sized model, 64-byte prompt, 128 tokens
    python bench/hf_generate.py --preset clm-small --tokens 256 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="clm-tiny", help="Registered model preset (perceiver show model).")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from perceiver import registry
    from perceiver.checkpoint import save_model
    from perceiver.hf import auto  # noqa: F401  (registers the Auto classes)
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    torch.manual_seed(0)
    values = dict(registry.get("model", args.preset).load(), cross_attention_dropout=0.0)
    model = CausalLanguageModel(CausalLanguageModelConfig(**values)).eval()
    prompt = torch.randint(6, 262, (1, min(args.prompt_len, model.config.max_seq_len)))
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, tmp, overwrite=True)
        wrapper = AutoModelForCausalLM.from_pretrained(tmp)
    num_latents = model.config.max_latents

    def project():
        return model.generate(prompt, num_tokens=args.tokens, num_latents=num_latents, temperature=0.0)

    def transformers_generate():
        return wrapper.generate(prompt, max_new_tokens=args.tokens, do_sample=False)[:, prompt.shape[1]:]

    same = torch.equal(project(), transformers_generate())  # also warms both up
    times = {"perceiver (KV cache)": [], "transformers generate (no cache)": []}
    runs = {"perceiver (KV cache)": project, "transformers generate (no cache)": transformers_generate}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"preset {args.preset}: max_seq_len {model.config.max_seq_len}, max_latents {num_latents}; prompt "
          f"{prompt.shape[1]} tokens, {args.tokens} new tokens, {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads; same tokens: {same}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:34s} {median:7.3f} s (median)   {args.tokens / median:8.1f} tokens/s")


if __name__ == "__main__":
    main()
