"""Helpers that s4mi's MONAI bundles call from their configs."""

from __future__ import annotations

from pathlib import Path

import torch

from .distributed import (
    ddp_device_ids,
    destroy_distributed,
    distributed_device,
    init_distributed,
    is_main_process,
    world_size,
)
from .outputs import OutputFolderError, ensure_writable, protect_model, run_ckpt_dir
from .overrides import BundleConfigError, check_overrides
from .stages import require_first_stage

__all__ = [
    "BundleConfigError",
    "OutputFolderError",
    "amp_kwargs",
    "as_bool",
    "check_overrides",
    "ddp_device_ids",
    "default_device",
    "destroy_distributed",
    "distributed_device",
    "ensure_writable",
    "init_distributed",
    "is_main_process",
    "world_size",
    "locate_bundle_root",
    "memory_format",
    "protect_model",
    "require_first_stage",
    "run_ckpt_dir",
]

_REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def locate_bundle_root(name: str) -> str:
    """Find the folder of bundle ``name`` so its configs run from anywhere.

    ``monai.bundle`` gives a config no way to learn its own path, and model-zoo bundles assume they are run from
    the bundle folder (``bundle_root = "."``). s4mi bundles also run from the repository root, so this looks in
    order at: the current folder (if it is the bundle), ``./bundles/<name>``, then the ``bundles/`` folder beside
    the installed package. MONAI Label and users override ``bundle_root`` directly.

    Raises:
        FileNotFoundError: when no folder named ``name`` with a ``configs/`` folder is found.
    """
    cwd = Path.cwd()
    candidates = [cwd, cwd / "bundles" / name, _REPO_BUNDLES / name]
    for c in candidates:
        if c.name == name and (c / "configs").is_dir():
            return str(c.resolve())
    raise FileNotFoundError(
        f"bundle {name!r} not found in {', '.join(str(c) for c in candidates)}; pass --bundle_root <folder>"
    )


def default_device(device: str | None = None) -> torch.device:
    """``cuda:0`` when CUDA is available, else ``cpu``; an explicit ``device`` string wins."""
    if device:
        return torch.device(device)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def as_bool(value: object) -> bool:
    """Read a flag given on the ``monai.bundle`` command line, where fire keeps ``false`` as the string "false".

    Raises:
        ValueError: for a string that is not a recognised boolean.
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", "", "none", "null"):
            return False
        raise ValueError(f"expected a boolean flag, got {value!r}")
    return bool(value)


def amp_kwargs(amp_dtype: str) -> dict[str, torch.dtype]:
    """``torch.autocast`` arguments for a bundle's ``amp_dtype`` setting (``float16`` or ``bfloat16``).

    Raises:
        ValueError: another dtype (the message names the two).
    """
    if amp_dtype not in ("float16", "bfloat16"):
        raise ValueError(f"amp_dtype must be float16 or bfloat16, got {amp_dtype!r}")
    return {"dtype": getattr(torch, amp_dtype)}


def memory_format(channels_last: object, spatial_dims: int) -> dict[str, torch.memory_format]:
    """The ``to_kwargs`` of a trainer and evaluator for a bundle's ``channels_last`` flag: every batch moved to the
    device as ``torch.channels_last`` (2D) or ``torch.channels_last_3d`` (3D), or ``{}``."""
    if not as_bool(channels_last):
        return {}
    return {"memory_format": torch.channels_last if int(spatial_dims) == 2 else torch.channels_last_3d}
