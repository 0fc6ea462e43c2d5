"""Mean Teacher and MoCo/JCL for a few steps, under torchrun (one half of each global batch per rank, DDP) or in one
process (the whole global batch): ``tests/engines/test_ddp_equivalence.py`` checks both end with the same weights.

    torchrun --nproc_per_node 2 tests/engines/_equivalence_script.py OUT   # writes OUT/rank<r>.pt
    (in one process: import this module and call ``run_all(world=1, rank=0)``)

The networks have no batch norm: its statistics are per rank under DDP (s4mi's bundles do not convert to
SyncBatchNorm), so a batch-norm network on 2 ranks normalises over each half and is not the doubled-batch run; with
``SyncBatchNorm`` (CUDA only in PyTorch) it would be. Everything else a step does is checked: DDP's gradient average
of per-rank mean losses, the optimizer step, the EMA teacher from the unwrapped module, and for MoCo the keys of every
rank gathered into one queue (``KeyQueue.enqueue``) that every rank reads as its negatives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from s4mi.engines import MeanTeacherTrainer, MoCoTrainer
from s4mi.handlers import EMATeacher
from s4mi.losses import JCLLoss
from s4mi.networks import EncoderWithHead, KeyQueue

STEPS, LOCAL = 3, 4  # steps; images per rank per step (the single process takes 2 x LOCAL)
WORLD = 2


def _global_items(seed: int, n: int, views: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 8, 8, generator=g) for _ in range(views)]


def _share(t: torch.Tensor, step: int, world: int, rank: int) -> torch.Tensor:
    """This rank's rows of global step ``step``: rank r takes the r-th slice of the step's WORLD x LOCAL rows."""
    size = WORLD * LOCAL // world
    start = step * WORLD * LOCAL + rank * size
    return t[start : start + size]


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _wrap(net: torch.nn.Module, world: int) -> torch.nn.Module:
    return torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net


def mean_teacher(world: int, rank: int) -> dict[str, dict[str, torch.Tensor]]:
    n = STEPS * WORLD * LOCAL
    x_lb, x_w, noise = _global_items(1, n, 3)
    y_lb = (torch.randn(n, 3, generator=torch.Generator().manual_seed(2)) > 0).float()
    batches = [
        {
            "labeled": {"image": _share(x_lb, s, world, rank), "label": _share(y_lb, s, world, rank)},
            "unlabeled": {
                "image": _share(x_w, s, world, rank),
                "image_s": _share(x_w + 0.3 * noise, s, world, rank),
            },
        }
        for s in range(STEPS)
    ]
    net = _net()
    model = _wrap(net, world)
    teacher = EMATeacher(model, momentum=0.9)
    trainer = MeanTeacherTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        teachers=[teacher],
        activation="sigmoid",
        unsup_weight=1.0,
    )
    trainer.run()
    return {"student": net.state_dict(), "teacher": teacher.ema_model.state_dict()}


def moco(world: int, rank: int) -> dict[str, dict[str, torch.Tensor]]:
    n = STEPS * WORLD * LOCAL
    x, noise_q, noise_k0, noise_k1 = _global_items(3, n, 4)
    batches = [
        {
            "image_q": _share(x + 0.2 * noise_q, s, world, rank),
            "image_k0": _share(x + 0.2 * noise_k0, s, world, rank),
            "image_k1": _share(x + 0.2 * noise_k1, s, world, rank),
        }
        for s in range(STEPS)
    ]
    torch.manual_seed(0)
    encoder = EncoderWithHead(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU()), torch.nn.Linear(16, 8)
    )
    model = _wrap(encoder, world)
    key_encoder = EMATeacher(model, momentum=0.9)
    torch.manual_seed(1)
    queue = KeyQueue(8, 4 * WORLD * LOCAL)  # the same initial queue in every process
    trainer = MoCoTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
        loss_function=JCLLoss(temperature=0.2),
        teachers=[key_encoder],
        queue=queue,
        jcl_lambda=0.5,
        key_keys=("image_k0", "image_k1"),
    )
    trainer.run()
    return {
        "student": encoder.state_dict(),
        "teacher": key_encoder.ema_model.state_dict(),
        "queue": {"queue": queue.queue.clone(), "ptr": queue.ptr.clone()},
    }


def run_all(world: int, rank: int) -> dict[str, dict]:
    return {"mean_teacher": mean_teacher(world, rank), "moco": moco(world, rank)}


if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        assert world == WORLD, f"run with --nproc_per_node {WORLD}"
        torch.save(run_all(world, rank), Path(sys.argv[1]) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
