"""Checkpoints between stages: a pretraining stage's backbone, teachers saved for the next stage, an exported teacher."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from s4mi.handlers.checkpoint import check_state_fits, read_checkpoint

__all__ = [
    "export_teacher",
    "load_pretrained_backbone",
    "load_teacher",
    "save_pretrained_backbone",
    "save_pretrained_backbones",
    "save_teachers",
]

logger = logging.getLogger(__name__)


def _starts_from(path: str | os.PathLike, resume_ckpt: str | os.PathLike, what: str) -> bool:
    """Whether a stage starts ``what`` from ``path``: not when it resumes (its checkpoint holds the weights), not
    when ``path`` is empty (the user asked to start from the initialisation)."""
    if resume_ckpt:
        logger.info(f"s4mi: resuming from {resume_ckpt}: the {what} is not loaded from {path or 'a pretrained file'}")
        return False
    if not str(path):
        logger.info(f"s4mi: no pretrained checkpoint given: the {what} starts from its initialisation")
        return False
    return True


def load_pretrained_backbone(
    network: nn.Module,
    path: str | os.PathLike,
    exclude: Sequence[str] = ("class_layers.out.",),
    key: str | None = "model",
    resume_ckpt: str | os.PathLike = "",
) -> list[str]:
    """Load pretrained backbone weights into ``network``, leaving its task head (``exclude``) as initialised.

    The pretraining bundles (``configs/pretrain.json``) save the key encoder's backbone with the key names of the
    plain MONAI network (e.g. :class:`monai.networks.nets.DenseNet121`), so the fine-tuning network loads them
    directly; only the classifier, which pretraining never trained, keeps its fresh initialisation. Unwraps
    ``DataParallel``/``DistributedDataParallel``.

    Args:
        network: the network to fine-tune.
        path: checkpoint written by the pretraining stage (loaded with ``weights_only=True``).
        exclude: prefixes of the parameter names to leave out (the task head).
        key: the entry of the checkpoint holding the state dict (MONAI's savers write ``{"model": ...}`` unless a
            single object is saved); None when the file is the state dict itself.
        resume_ckpt: the run's resume checkpoint; when set nothing is loaded (the run continues from it). An empty
            ``path`` loads nothing either (fine-tuning from scratch).

    Returns:
        the names of the parameters left at their initialisation (those under ``exclude``; every one when nothing
        is loaded).

    Raises:
        FileNotFoundError: ``path`` does not exist (with how to make it).
        ValueError: the checkpoint lacks a backbone weight, or a weight's shape differs (names the first ones).
    """
    if not _starts_from(path, resume_ckpt, "backbone"):
        return list(_unwrap(network).state_dict())
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} not found: run the bundle's configs/pretrain.json first (or `s4mi run "
            "<bundle>`, which runs both stages), or set pretrained_ckpt to '' to fine-tune from scratch"
        )
    state = read_checkpoint(path, "pretrained weights")
    if key is not None and isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    network = _unwrap(network)
    own = network.state_dict()
    skipped = [k for k in own if any(k.startswith(p) for p in exclude)]
    wanted = [k for k in own if k not in skipped]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} backbone weight(s) of the network, e.g. {missing[:3]}")
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wanted if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: weight shapes differ from the network's, e.g. {bad[:3]}")
    network.load_state_dict({k: state[k] for k in wanted}, strict=False)
    logger.info(
        f"s4mi: loaded the pretrained backbone from {path} ({len(wanted)} tensors; left as initialised: {skipped})"
    )
    return skipped


def save_pretrained_backbone(encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write an encoder's backbone weights, keyed for its classifier network, atomically to ``path``.

    The pretraining bundles call this once training has completed (not on an exception, unlike a final
    checkpoint), so a ``pretrained.pt`` always holds a finished pretraining. The file is the plain state dict of
    the MONAI network without its classifier and without the projection head: :func:`load_pretrained_backbone`
    reads it, and so does ``DenseNet121(...).load_state_dict(torch.load(path, weights_only=True), strict=False)``.

    Args:
        encoder: an :class:`s4mi.networks.EncoderWithHead` (e.g. the key encoder, ``EMATeacher.ema_model``).
        path: the file to write (its folder is made).

    Under ``torch.distributed`` only the main process writes.

    Returns:
        the path written.
    """
    from s4mi.bundle.distributed import is_main_process
    from s4mi.networks.heads import backbone_state_dict_for_classifier

    if not is_main_process():
        return Path(path)

    state = {k: v.detach().cpu().clone() for k, v in backbone_state_dict_for_classifier(encoder).items()}
    return _atomic_save(state, Path(path))


def save_pretrained_backbones(backbones: dict[str, dict[str, torch.Tensor]], path: str | os.PathLike) -> Path:
    """Write several backbones' state dicts as one file, ``{name: state_dict}``, atomically to ``path``.

    A pretraining that trains more than one network for fine-tuning (CASS: a CNN and a ViT) writes them together;
    the fine-tuning stage picks one with ``load_pretrained_backbone(..., key=name)``. Under ``torch.distributed``
    only the main process writes.

    Args:
        backbones: name -> state dict (e.g. ``{"cnn": pair.cnn_state_dict(), "vit": pair.vit_state_dict()}``).
        path: the file to write (its folder is made).

    Returns:
        the path written.
    """
    from s4mi.bundle.distributed import is_main_process

    if not is_main_process():
        return Path(path)
    state = {name: {k: v.detach().cpu().clone() for k, v in sd.items()} for name, sd in backbones.items()}
    return _atomic_save(state, Path(path))


def _unwrap(network: nn.Module) -> nn.Module:
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return network.module
    return network


def _atomic_save(obj: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def _state_dict_of(path: Path, what: str) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path, what)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} ({what}) is not a state dict of tensors")
    return state


def save_teachers(path: str | os.PathLike, **files: str | os.PathLike) -> Path:
    """Bundle a first stage's teacher checkpoints into one file, ``{name: state_dict}``, written atomically.

    The online pseudo-labelling bundles' stage 0 (``configs/pretrain.json``) keeps its best teacher and its best
    momentum copy in ``teacher.pt`` and ``teacher_momentum.pt``; ``pretrained.pt`` holds both, so the student stage
    (and the benchmark, which shares one stage 0 between the student variants) needs one path.

    Raises:
        FileNotFoundError: a checkpoint is missing (named).
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, file in files.items():
        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"{name} checkpoint {file} not found: did the teacher stage validate at all?")
        out[name] = _state_dict_of(file, name)
    return _atomic_save(out, Path(path))


def _teacher_state(path: str | os.PathLike, source: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher weights {path} not found: run the bundle's configs/pretrain.json (the teacher stage) first, or "
            "`s4mi run <bundle>`, which runs both stages"
        )
    state = read_checkpoint(path, "teacher weights")
    if not isinstance(state, dict) or source not in state:
        raise KeyError(
            f"{path} holds no {source!r} teacher (it has {sorted(state) if isinstance(state, dict) else type(state)}): "
            "set teacher_source to one of them"
        )
    return state[source]


def load_teacher(
    teacher: nn.Module,
    path: str | os.PathLike,
    source: str = "teacher_momentum",
    role: str = "pseudo-label teacher",
    resume_ckpt: str | os.PathLike = "",
    enabled: bool = True,
) -> nn.Module:
    """Load the ``source`` entry of a :func:`save_teachers` file into ``teacher`` (an ``EMATeacher`` or a network).

    The student stage of the online pseudo-labelling bundles loads it into the pseudo-label teacher and, with
    ``student_init="teacher"``, into the student too (``role`` names which in the log).

    Args:
        teacher: an ``EMATeacher`` (its ``ema_model`` is loaded) or a network.
        path: the file of :func:`save_teachers`; empty loads nothing.
        source: which of its teachers to load.
        role: what the loaded network is, for the log.
        resume_ckpt: the run's resume checkpoint; when set nothing is loaded (the run continues from it).
        enabled: False loads nothing (e.g. a student that starts from scratch).

    Returns:
        the network, loaded (or as it was).
    """
    net = _unwrap(getattr(teacher, "ema_model", teacher))
    if not enabled or not _starts_from(path, resume_ckpt, role):
        return net
    state = _teacher_state(path, source)
    check_state_fits(net, state, path, f"teacher weights ({source!r} of)")
    net.load_state_dict(state)
    logger.info("loaded the %s as the %s from %s", source.replace("_", " "), role, path)
    return net


def export_teacher(path: str | os.PathLike, source: str, out: str | os.PathLike) -> Path:
    """Write the ``source`` teacher of a :func:`save_teachers` file as a bundle's ``models/model.pt`` (a state dict).

    This is how the teacher itself (supervised on the labelled data only) is evaluated and served like any model.
    """
    return _atomic_save(_teacher_state(path, source), Path(out))
