"""Mean Teacher under DDP with two gloo processes: students stay in sync and teachers follow the unwrapped module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from s4mi.data.loaders import SemiSupervisedLoader
from s4mi.engines import MeanTeacherTrainer
from s4mi.handlers import EMATeacher
from tests.conftest import free_port


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        lb = [
            {"image": torch.randn(1, 8, 8, generator=g), "label": torch.randint(0, 2, (2,), generator=g).float()}
            for _ in range(16)
        ]
        ulb = []
        for _ in range(32):
            x = torch.randn(1, 8, 8, generator=g)
            ulb.append({"image": x, "image_s": x + 0.2 * torch.randn(1, 8, 8, generator=g)})
        lb_loader = DataLoader(lb, batch_size=4, sampler=DistributedSampler(lb, world, rank, seed=0))
        ulb_loader = DataLoader(ulb, batch_size=4, sampler=DistributedSampler(ulb, world, rank, seed=0))
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        teacher = EMATeacher(ddp, momentum=0.9)
        assert teacher.model is net, "the teacher must track the module inside DDP"
        trainer = MeanTeacherTrainer(
            device="cpu",
            max_epochs=2,
            train_data_loader=SemiSupervisedLoader(lb_loader, ulb_loader, "unlabeled"),
            network=ddp,
            optimizer=torch.optim.SGD(ddp.parameters(), lr=0.1),
            loss_function=torch.nn.BCEWithLogitsLoss(),
            teachers=[teacher],
            activation="sigmoid",
        )
        trainer.run()
        torch.save(
            {
                "student": net.state_dict(),
                "teacher": teacher.ema_model.state_dict(),
                "iterations": trainer.state.iteration,
            },
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_gloo(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["iterations"] == r1["iterations"] == 2 * 4  # 32 unlabelled / 2 ranks / batch 4, two epochs
    for part in ("student", "teacher"):
        for k in r0[part]:
            assert torch.allclose(r0[part][k], r1[part][k], atol=1e-6), f"{part} {k} differs across ranks"
    assert any(not torch.equal(r0["student"][k], r0["teacher"][k]) for k in r0["student"])
