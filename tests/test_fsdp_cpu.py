"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU with gloo, two processes, for every model kind: each rank
holds a shard of every attention layer and half of the batch, and the loss and gradients equal one process's on the
whole batch. This is what proves that no code path reads a sharded layer's parameters without calling it (the
image path's split input, the row-sparse decoder, the fused linear paths)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

KINDS = ["clm", "mlm", "text-clf", "image-clf"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, kind: str) -> None:
    import copy

    import torch.distributed as dist
    from tiny_models import MODELS, inputs
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from perceiver.core.layers import CrossAttentionLayer, SelfAttentionLayer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        plain = MODELS[kind]().train()
        for module in plain.modules():  # dropout would draw different masks on different ranks
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        sharded = copy.deepcopy(plain)
        mesh = init_device_mesh("cpu", (world_size,))
        units = [m for m in sharded.modules() if isinstance(m, (CrossAttentionLayer, SelfAttentionLayer))]
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        assert len(units) >= 2

        args, loss_of = inputs(kind)
        full_loss = loss_of(plain(*args))
        full_loss.backward()
        half = tuple(a[rank : rank + 1] if torch.is_tensor(a) else a for a in args)  # the batch is 2
        half_loss = loss_of(sharded(*half), rows=slice(rank, rank + 1))
        half_loss.backward()  # FSDP averages the gradients over the ranks
        losses = [torch.zeros(()) for _ in range(world_size)]
        dist.all_gather(losses, half_loss.detach())
        torch.testing.assert_close(torch.stack(losses).mean(), full_loss.detach(), rtol=1e-5, atol=1e-6)
        expected = dict(plain.named_parameters())
        for name, param in sharded.named_parameters():
            grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
            torch.testing.assert_close(grad, expected[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_fsdp2_on_two_cpu_processes_gives_the_loss_and_gradients_of_one(kind):
    mp.spawn(_worker, args=(2, _free_port(), kind), nprocs=2, join=True)
