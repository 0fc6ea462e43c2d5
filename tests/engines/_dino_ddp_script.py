"""One rank of a 2-process DINO pretraining under ``torch.distributed.run`` (gloo, CPU), for test_dino_ddp.py.

Each rank draws its own random crops (seeded by its rank), so the teacher's batch mean differs between ranks and only
the all-reduce of :meth:`s4mi.losses.DINOLoss.update_center` makes the centres agree. Writes ``rank<r>.pt`` into the
folder given as the first argument: the centre, the teacher's and the student's weights, and this rank's own teacher
batch mean at each step (for the test to replay the centre with and without the other rank's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from monai.engines.utils import IterationEvents
from torch.nn.parallel import DistributedDataParallel

from s4mi.engines import DINOTrainer
from s4mi.engines.dino import dino_param_groups
from s4mi.handlers import EMATeacher
from s4mi.losses import DINOLoss
from s4mi.networks import CropViT, DINOHead, MultiCropWrapper

OUT_DIM = 12
BATCH = 4
ITERATIONS = 3


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        torch.manual_seed(0)  # the same initial student on both ranks (DDP broadcasts rank 0's anyway)
        vit = CropViT(in_channels=1, img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
        student = MultiCropWrapper(vit, DINOHead(16, OUT_DIM, hidden_dim=16, bottleneck_dim=8))
        ddp = DistributedDataParallel(student)
        teacher = EMATeacher(ddp, momentum=0.9)
        assert teacher.model is student, "the teacher must track the module inside DDP"
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        data = [
            {
                "image_g0": torch.rand(BATCH, 1, 16, 16, generator=g),
                "image_g1": torch.rand(BATCH, 1, 16, 16, generator=g),
                "image_l0": torch.rand(BATCH, 1, 8, 8, generator=g),
            }
            for _ in range(ITERATIONS)
        ]
        loss = DINOLoss(OUT_DIM)
        trainer = DINOTrainer(
            device="cpu",
            max_epochs=1,
            train_data_loader=data,
            network=ddp,
            optimizer=torch.optim.AdamW(dino_param_groups(ddp), lr=1e-2),
            loss_function=loss,
            teachers=[teacher],
            teacher_temp=0.04,
            freeze_last_layer=0,
            local_keys=("image_l0",),
        )
        local_means: list[torch.Tensor] = []
        trainer.add_event_handler(
            IterationEvents.LOSS_COMPLETED,
            lambda e: local_means.append(torch.cat(e.state.output["teacher_out"]).mean(0, keepdim=True).detach()),
        )
        trainer.run()
        torch.save(
            {
                "center": loss.center.clone(),
                "teacher": teacher.ema_model.state_dict(),
                "student": student.state_dict(),
                "local_means": torch.cat(local_means),
                "iterations": trainer.state.iteration,
                "world_size": dist.get_world_size(),
            },
            out / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]))
