"""What the bundles' ``multi_gpu_*.json`` overlays call, so their configs hold no rank or device logic.

Model-zoo overlays write this logic inline (``"$'nccl' if torch.cuda.is_available() else 'gloo'"``, handler lists
sliced by position on ``dist.get_rank()``). s4mi's overlays call these functions instead, and the handlers that
only the main process should run say so by name: ``"_disabled_": "$not @main_process"``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "ddp_device_ids",
    "destroy_distributed",
    "distributed_device",
    "init_distributed",
    "is_main_process",
    "world_size",
]


def is_main_process() -> bool:
    """True outside ``torch.distributed`` and on rank 0: the process that logs, shows progress and saves."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    """The number of processes of the ``torch.distributed`` group (1 when it is not initialised): DINO's learning
    rate scales with the batch of every rank together."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def distributed_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:<LOCAL_RANK>`` when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(device: torch.device | str) -> bool:
    """Join the process group started by ``torchrun`` (NCCL on CUDA, Gloo on the CPU) and select ``device``.

    Idempotent: a group that is already initialised is kept.

    Returns:
        True (so a bundle's ``initialize`` list can call it).
    """
    device = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return True


def destroy_distributed() -> bool:
    """Leave the process group if one is initialised; returns True."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return True


def ddp_device_ids(device: torch.device | str) -> list[torch.device] | None:
    """``DistributedDataParallel``'s ``device_ids``: the one CUDA device of this process, None on the CPU."""
    device = torch.device(device)
    return [device] if device.type == "cuda" else None
