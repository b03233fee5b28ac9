"""Scaling out (docs/distributed.md): DDP on CPU with the gloo backend, FSDP, mixed precision, torch.compile, the
samplers that split data between ranks, and requests this machine cannot serve. Multi-process runs are slow."""

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import cli

from perceiver.data.corpus import RandomWindowDataset, collate_windows
from perceiver.data.distributed import EvenBatchSampler, FreshItemSampler, even_batches, training_loader

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed_run.py"
TIMEOUT = 900
"""Seconds before a multi-process test counts as hung: generous, for a loaded 2-core machine."""
SAME_RUN = ["--model", "clm-tiny", "--cross-attention-dropout", "0", "--set", "data.random_train_truncation=0",
            "--lr", "0.003", "--warmup-steps", "2", "--limit-val-batches", "0", "--accelerator", "cpu", "--no-progress"]
"""CLI options matching tests/distributed_run.py: no randomness in the forward pass, full windows only."""


def run(args, env, check=True):
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=TIMEOUT)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}")
    return result


def perceiver(*args, env, check=True):
    return run([sys.executable, "-m", "perceiver.cli", *args], env, check)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = "the robot reads bytes one by one and then a perceiver attends to its latent prefix".split()
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(8000)))
    return path


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {"PERCEIVER_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


# ----------------------------------------------------------------------------------------------------------------
#  Samplers
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 2, 4, 16])
@pytest.mark.parametrize("num_items", [8, 9, 17, 31, 64, 100])
def test_even_batches_cover_every_item_once_with_the_same_batch_count_on_every_rank(num_items, batch_size, world_size):
    batches = even_batches(num_items, batch_size, world_size)
    assert len(batches) == world_size
    assert len({len(rank_batches) for rank_batches in batches}) == 1  # no rank waits for another
    items = sorted(i for rank_batches in batches for batch in rank_batches for i in batch)
    assert items == list(range(num_items))  # nothing duplicated, nothing dropped
    sizes = [len(batch) for rank_batches in batches for batch in rank_batches]
    assert min(sizes) >= 1 and max(sizes) <= max(batch_size, 2)
    if batch_size > 1 or num_items % world_size == 0:
        assert max(sizes) <= batch_size
    if world_size == 1:
        assert len(batches[0]) == -(-num_items // batch_size)  # one process: as few batches as batch_size allows


def test_even_batches_refuse_fewer_items_than_ranks():
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        even_batches(3, 8, 4)


def test_even_batch_sampler_gives_each_rank_its_share():
    dataset = list(range(10))
    shares = [list(EvenBatchSampler(dataset, batch_size=4, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shares] == [1, 1, 1]
    assert sorted(i for share in shares for batch in share for i in batch) == dataset


def test_fresh_item_sampler_splits_every_step_between_ranks_and_never_repeats_an_index():
    dataset = list(range(10))  # 10 items per epoch, 2 ranks, 2 epochs
    ranks = [FreshItemSampler(dataset, num_replicas=2, rank=r) for r in range(2)]
    seen = []
    for epoch in range(2):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == 5
        for step in range(0, 5, 2):  # per-rank batch of 2 = global batch of 4, as one process reads them
            together = sorted(per_rank[0][step : step + 2] + per_rank[1][step : step + 2])
            start = epoch * 10 + 2 * step
            assert together == list(range(start, min(start + 4, (epoch + 1) * 10)))
        seen += per_rank[0] + per_rank[1]
    assert sorted(seen) == list(range(20))
    assert list(FreshItemSampler(list(range(5)), num_replicas=2, rank=1)) == [1, 3, 5]  # rounded up, not padded


def test_the_epoch_reaches_data_loader_workers():
    data = np.frombuffer(bytes(range(256)) * 8, dtype=np.uint8)
    dataset = RandomWindowDataset(data, max_seq_len=16, truncation_prob=0.0, seed=1)
    loader = training_loader(dataset, batch_size=4, collate_fn=collate_windows, num_workers=1)
    first = next(iter(loader))[1]
    loader.sampler.set_epoch(1)  # what Lightning does at every epoch; the persistent worker keeps its dataset copy
    second = next(iter(loader))[1]
    assert not torch.equal(first, second)
    dataset.set_epoch(1)
    assert torch.equal(second, collate_windows([dataset[i] for i in range(4)])[1])


# ----------------------------------------------------------------------------------------------------------------
#  One process: validation metrics, precision, requests this machine cannot serve, compile
# ----------------------------------------------------------------------------------------------------------------


def test_validation_metrics_weight_every_prediction_like_perceiver_eval(tmp_path, corpus, cache_env, monkeypatch):
    from perceiver.checkpoint import load_model
    from perceiver.data.text import TextDataConfig, TextFilesDataModule
    from perceiver.training.evaluate import evaluate
    from perceiver.training.fit import fit
    from perceiver.training.plan import plan_training

    monkeypatch.setenv("PERCEIVER_CACHE_DIR", cache_env["PERCEIVER_CACHE_DIR"])
    options = {"data": {"data_path": str(corpus), "batch_size": 3}, "trainer": {
        "output_dir": str(tmp_path / "run"), "max_steps": 2, "val_check_interval": 2, "limit_val_batches": 0,
        "accelerator": "cpu", "devices": "1", "progress": False}}
    result = fit(plan_training("clm", "text", preset="clm-tiny", options=options))
    data = TextFilesDataModule(TextDataConfig(data_path=str(corpus), max_seq_len=64, batch_size=7))
    expected = evaluate(load_model(result["model_dir"]), data.val_dataloader(), "clm", progress=False)
    assert result["metrics"]["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)  # other batch size, same mean


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, corpus, cache_env, capsys, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", cache_env["PERCEIVER_CACHE_DIR"])
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", str(corpus), "--model", "clm-tiny",
                       "--max-steps", "3", "--val-check-interval", "3", "--batch-size", "4", "--accelerator", "cpu",
                       "--precision", "bf16-mixed", "--output-dir", str(tmp_path / "run"), "--no-progress")
    assert code == 0, err
    metrics = (tmp_path / "run" / "logs" / "metrics.csv").read_text()
    assert "val_loss" in metrics and "nan" not in metrics
    from perceiver.checkpoint import load_model

    assert all(p.dtype == torch.float32 for p in load_model(tmp_path / "run").parameters())  # fp32 master weights


@pytest.mark.parametrize(
    "args,message",
    [
        (["--devices", "64"], "asks for 64 devices, but this machine has"),
        (["--devices", "0,1"], "lists GPU ids"),
        (["--devices", "0"], "devices must be a number"),
        (["--precision", "fp8"], "precision must be 32, bf16-mixed or 16-mixed"),
        (["--strategy", "deepspeed"], "strategy must be one of auto, ddp, fsdp"),
        (["--num-nodes", "0"], "num_nodes must be >= 1"),
    ],
)
def test_impossible_device_requests_are_one_line_errors(tmp_path, corpus, capsys, args, message):
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", str(corpus), "--model", "clm-tiny",
                       "--output-dir", str(tmp_path / "run"), "--no-progress", *args)
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "env,devices,num_nodes,message",
    [
        ({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, "1", 1, "torchrun started 2 process(es) per machine"),
        ({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}, "2", 1, "pass --devices 2 --num-nodes 2"),
        ({"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2(x2)", "SLURM_JOB_NAME": "train"}, "1", 2, "SLURM started"),
        ({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"}, "2", 2, None),
        ({"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "bash"}, "1", 1, None),  # an interactive allocation: not a launcher
    ],
)
def test_processes_started_by_torchrun_or_slurm_must_match_devices_and_nodes(monkeypatch, env, devices, num_nodes,
                                                                             message):
    from perceiver.training.config import TrainerConfig
    from perceiver.training.fit import DeviceError, check_devices

    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = TrainerConfig(accelerator="cpu", devices=devices, num_nodes=num_nodes)
    if message is None:
        assert check_devices(config) == ("cpu", int(devices))
    else:
        with pytest.raises(DeviceError, match=re.escape(message)):
            check_devices(config)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without CUDA")
@pytest.mark.parametrize(
    "args,message",
    [
        (["--strategy", "fsdp"], "--strategy fsdp needs CUDA GPUs"),
        (["--precision", "16-mixed"], "--precision 16-mixed needs a CUDA GPU; on CPU use --precision bf16-mixed"),
        (["--accelerator", "gpu"], "--accelerator gpu needs a CUDA GPU"),
    ],
)
def test_cuda_only_options_without_cuda_are_one_line_errors(tmp_path, corpus, capsys, args, message):
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", str(corpus), "--model", "clm-tiny",
                       "--output-dir", str(tmp_path / "run"), "--no-progress", *args)
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_strategies_are_lightnings_with_our_timeout_and_wrap_policy():
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy

    from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer
    from perceiver.training.config import TrainerConfig
    from perceiver.training.fit import build_strategy

    assert build_strategy(TrainerConfig(), num_devices=1) == "auto"
    ddp = build_strategy(TrainerConfig(distributed_timeout=60), num_devices=2)  # auto + several processes = DDP
    assert isinstance(ddp, DDPStrategy) and ddp._timeout == timedelta(seconds=60)
    assert isinstance(build_strategy(TrainerConfig(num_nodes=2), num_devices=1), DDPStrategy)
    fsdp = build_strategy(TrainerConfig(strategy="fsdp"), num_devices=2)
    assert isinstance(fsdp, FSDPStrategy) and fsdp._state_dict_type == "full"
    assert fsdp.kwargs["auto_wrap_policy"]._module_classes == {CrossAttentionLayer, SelfAttentionLayer}


@pytest.mark.slow
def test_compile_gives_the_logits_of_eager_mode_and_keeps_parameter_names():
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig

    torch.manual_seed(0)
    config = CausalLanguageModelConfig(max_seq_len=32, max_latents=8, num_channels=32, num_heads=2,
                                       num_self_attention_layers=1)
    model = CausalLanguageModel(config).eval()
    x = torch.randint(6, 262, (2, 32))
    pad_mask = torch.zeros(2, 32, dtype=torch.bool)
    pad_mask[1, :5] = True
    names = list(model.state_dict())
    with torch.no_grad():
        eager = model(x, prefix_len=24, pad_mask=pad_mask)
        model.compile()  # what --compile does
        compiled = model(x, prefix_len=24, pad_mask=pad_mask)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)  # kernels fuse and reorder float sums
    assert list(model.state_dict()) == names  # checkpoints resume with or without --compile


# ----------------------------------------------------------------------------------------------------------------
#  FSDP
# ----------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, world_size: int, port: int) -> None:
    """Compare the gradients of an FSDP model (our wrap policy, activation checkpointing on), each rank holding half
    of the batch, with those of the plain model on the whole batch."""
    import copy

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer, set_activation_checkpointing
    from perceiver.tasks.clm import CausalLanguageModel, CausalLanguageModelConfig
    from perceiver.training.fit import fsdp_wrap_policy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        config = CausalLanguageModelConfig(max_seq_len=32, max_latents=8, num_channels=32, num_heads=2,
                                           num_self_attention_layers=2, cross_attention_dropout=0.0)
        plain = CausalLanguageModel(config).train()
        sharded = copy.deepcopy(plain)
        set_activation_checkpointing(sharded, True)
        sharded = FSDP(sharded, auto_wrap_policy=fsdp_wrap_policy(), use_orig_params=True,
                       device_id=torch.device("cpu"))
        units = [m for m in sharded.modules() if isinstance(m, FSDP)][1:]  # [0] is the root
        assert len(units) == 3 and all(isinstance(u.module, (CrossAttentionLayer, SelfAttentionLayer)) for u in units)

        x = torch.randint(6, 262, (4, 32), generator=torch.Generator().manual_seed(1))
        plain(x, prefix_len=24).logsumexp(-1).mean().backward()
        half = x[2 * rank : 2 * rank + 2]
        sharded(half, prefix_len=24).logsumexp(-1).mean().backward()  # FSDP averages the ranks' gradients
        with FSDP.summon_full_params(sharded, with_grads=True):
            expected = dict(plain.named_parameters())
            for name, param in sharded.named_parameters():
                name = name.replace("_fsdp_wrapped_module.", "")
                torch.testing.assert_close(param.grad, expected[name].grad, rtol=1e-4, atol=1e-6)

        # FSDP flattens the parameters before Lightning calls configure_optimizers: weight decay must still find
        # the matrices
        from perceiver.training.lightning_module import LitCausalLanguageModel

        lit = LitCausalLanguageModel(config, {"schedule": "constant"})
        lit.model = FSDP(lit.model, auto_wrap_policy=fsdp_wrap_policy(), use_orig_params=True,
                         device_id=torch.device("cpu"))
        assert all(p.dim() == 1 for p in lit.parameters())
        decay, no_decay = lit.configure_optimizers()["optimizer"].param_groups
        assert len(decay["params"]) == sum(p.dim() >= 2 for p in plain.parameters()) > 0
        assert len(no_decay["params"]) == sum(p.dim() < 2 for p in plain.parameters())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_shards_our_attention_layers_and_gives_the_gradients_of_one_process():
    """FSDP itself, on CPU with gloo (Lightning's FSDPStrategy refuses CPU; see the CUDA test below)."""
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_worker, args=(2, _free_port()), nprocs=2, join=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDPStrategy runs only on CUDA GPUs, and this "
                    "machine has none; FSDP wrapping and gradients are tested on CPU by the test above")
def test_fsdp_training_checkpoints_full_weights_that_load_on_one_device(tmp_path, corpus, cache_env):
    devices = str(min(2, torch.cuda.device_count()))
    out = tmp_path / "fsdp"
    args = ["train", "clm", "--data", "text", "--data-path", str(corpus), "--model", "clm-tiny", "--batch-size", "4",
            "--val-check-interval", "3", "--accelerator", "gpu", "--devices", devices, "--strategy", "fsdp",
            "--no-progress", "--output-dir", str(out), "--activation-checkpointing"]
    perceiver(*args, "--max-steps", "3", env=cache_env)
    resumed = perceiver(*args, "--max-steps", "5", "--resume", env=cache_env)
    assert "done at step 5" in resumed.stderr
    generated = perceiver("generate", "--model", str(out), "--prompt", "the robot", "--num-tokens", "5", env=cache_env)
    assert generated.stdout.startswith("the robot")


# ----------------------------------------------------------------------------------------------------------------
#  DDP: two processes on CPU
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, corpus, cache_env):
    """6 steps of DDP on 2 processes, batch 4 per process, through the Python API (records what each rank read)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    run([sys.executable, str(SCRIPT), str(out), str(corpus), "--max-steps", "6", "--batch-size", "4"], cache_env)
    return out


def _steps(out: Path, rank: int):
    record = json.loads((out.parent / "ranks" / f"{rank}.json").read_text())
    assert record["world_size"] == 2
    return {int(step): [tuple(row) for row in rows] for step, rows in record["steps"].items()}


@pytest.mark.slow
def test_ddp_ranks_read_different_windows_that_together_are_the_single_process_batch(ddp_run, corpus, cache_env,
                                                                                     monkeypatch):
    from perceiver.data.text import TextDataConfig, TextFilesDataModule

    monkeypatch.setenv("PERCEIVER_CACHE_DIR", cache_env["PERCEIVER_CACHE_DIR"])
    rank0, rank1 = _steps(ddp_run, 0), _steps(ddp_run, 1)
    assert sorted(rank0) == sorted(rank1) == list(range(6))
    one_process = TextFilesDataModule(TextDataConfig(data_path=str(corpus), max_seq_len=64, batch_size=8,
                                                     random_train_truncation=0.0, seed=0)).train_dataloader()
    for step, (_, input_ids, _) in zip(range(6), one_process):
        assert not set(rank0[step]) & set(rank1[step])
        assert sorted(rank0[step] + rank1[step]) == sorted(map(tuple, input_ids.tolist()))


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_global_batch(ddp_run, corpus, cache_env, tmp_path, capsys,
                                                            monkeypatch):
    """Same windows per step, equal token counts per rank (full windows), same initial weights: in exact arithmetic
    the runs are identical, and only the order of float sums differs (gradient all-reduce, split batch). Measured
    after 6 steps: weights within 3e-6, val loss equal to 7 digits. A rank reading wrong data is far outside the
    tolerances: one process on half the data (batch 4) ends 2e-2 away in weights (Adam moves each weight by about
    lr = 3e-3 per step whatever the gradient's size, so a flipped gradient sign shows)."""
    monkeypatch.setenv("PERCEIVER_CACHE_DIR", cache_env["PERCEIVER_CACHE_DIR"])
    from perceiver.checkpoint import load_model

    single = tmp_path / "single"
    code, _, err = cli(capsys, "train", "clm", "--data", "text", "--data-path", str(corpus), *SAME_RUN, "--devices",
                       "1", "--batch-size", "8", "--max-steps", "6", "--val-check-interval", "6", "--output-dir",
                       str(single))
    assert code == 0, err
    ddp_model, single_model = load_model(ddp_run), load_model(single)
    for (name, a), (_, b) in zip(ddp_model.state_dict().items(), single_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=name)

    def last_val_loss(out):
        rows = (out / "logs" / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        values = [dict(zip(header, row.split(","))) for row in rows[1:]]
        return float([v for v in values if v.get("val_loss")][-1]["val_loss"])

    assert last_val_loss(ddp_run) == pytest.approx(last_val_loss(single), abs=1e-4)


@pytest.mark.slow
def test_ddp_checkpoint_is_written_once_resumes_on_two_processes_and_loads_on_one(ddp_run, corpus, cache_env):
    files = sorted(p.name for p in (ddp_run / "checkpoints").iterdir())
    assert files == ["last.ckpt"]  # rank 0 only, no temporary file left behind
    assert torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6

    # the `perceiver` console script under DDP: Lightning runs `python .../bin/perceiver ...` again for rank 1
    script = Path(sys.executable).parent / "perceiver"
    command = [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "perceiver.cli"]
    resumed = run([*command, "train", "clm", "--data", "text", "--data-path", str(corpus), *SAME_RUN, "--devices", "2",
                   "--strategy", "ddp", "--batch-size", "4", "--max-steps", "8", "--val-check-interval", "2",
                   "--output-dir", str(ddp_run), "--resume", "--activation-checkpointing"], cache_env)
    assert resumed.stderr.count("done at step 8") == 1  # reported by rank 0 only
    assert torch.load(ddp_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    generated = perceiver("generate", "--model", str(ddp_run), "--prompt", "the robot", "--num-tokens", "8",
                          "--seed", "0", env=cache_env)
    assert generated.stdout.startswith("the robot") and len(generated.stdout) > len("the robot")


@pytest.mark.slow
def test_torchrun_starts_the_ranks_and_lightning_joins_them(tmp_path, corpus, cache_env):
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    result = run([*command, "--nnodes", "1", "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m",
                  "perceiver.cli", "train", "clm", "--data", "text", "--data-path", str(corpus), "--model", "clm-tiny",
                  "--batch-size", "2", "--max-steps", "2", "--val-check-interval", "2", "--accelerator", "cpu",
                  "--devices", "2", "--strategy", "ddp", "--no-progress", "--output-dir", str(tmp_path / "run")],
                 cache_env)
    assert result.stderr.count("done at step 2") == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("dying_rank", [0, 1])
def test_a_rank_that_dies_ends_the_whole_run(tmp_path, corpus, cache_env, dying_rank):
    out = tmp_path / "run"
    start = time.monotonic()
    result = run([sys.executable, str(SCRIPT), str(out), str(corpus), "--die-on-rank", str(dying_rank),
                  "--die-at-step", "1"], cache_env, check=False)
    assert result.returncode != 0
    pids = [json.loads((out.parent / "ranks" / f"{rank}.json").read_text())["pid"] for rank in (0, 1)]
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids), "a rank outlived the run"
    assert time.monotonic() - start < 300  # far below the distributed timeout (1800 s): the failure is noticed
