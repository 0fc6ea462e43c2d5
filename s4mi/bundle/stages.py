"""A bundle's stages, said and run from one place.

A one-stage bundle trains with ``configs/train.json``. A two-stage bundle (S2MTS2, online pseudo-labelling) has
``configs/pretrain.json`` too: its first stage writes ``@ckpt_dir/pretrained.pt`` (a pretrained backbone, or the
teachers), which the second stage reads as ``pretrained_ckpt``. Three callers run stages, each in its own way, and
all of them ask this module which stages a bundle has and how they link:

* ``s4mi run`` (:func:`run_stages`): every stage in order in one ``output_dir``, with the same overrides, each in a
  ``python -m monai.bundle run`` child process, as a user would run them one by one.
* ``s4mi benchmark``: the first stage once per seed in a folder of its own, shared by every label fraction when it
  reads no label (:func:`first_stage_overrides`), then the second stage with ``pretrained_ckpt`` pointing at it
  (:func:`next_stage_overrides`); both through :func:`run_command`, which records wall time and peak memory.
* the MONAI Label train task: the last stage only, from the bundle's ``models/model.pt``
  (:func:`model_start_overrides`).

:func:`is_semi_supervised` is the one test of whether a bundle's training draws unlabelled data.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .overrides import BundleConfigError


def locate_bundle_root(name: str) -> str:
    """:func:`s4mi.bundle.locate_bundle_root` (imported on call: this module is imported by the package itself)."""
    from . import locate_bundle_root as locate

    return locate(name)


__all__ = [
    "STAGES",
    "Stage",
    "StageError",
    "StageRun",
    "bundle_configs",
    "bundle_stages",
    "cli_value",
    "defined_overrides",
    "first_stage_overrides",
    "is_semi_supervised",
    "model_start_overrides",
    "monai_bundle_command",
    "next_stage_overrides",
    "require_first_stage",
    "run_command",
    "run_stages",
]

#: stage names in the order they run; a bundle has the stages whose ``configs/<name>.json`` exists
STAGES = ("pretrain", "train")
#: what a first stage writes into its ``ckpt_dir`` (the bundles' ``pretrained_ckpt`` default) for the next stage
PRETRAINED_FILE = "pretrained.pt"


class StageError(RuntimeError):
    """A stage is missing, or its child process failed."""


@dataclass(frozen=True)
class Stage:
    """One stage of a bundle: ``name`` (``pretrain`` or ``train``) and its config file ``configs/<name>.json``."""

    name: str
    config_file: Path

    @property
    def configs(self) -> Path:
        return self.config_file.parent

    def read(self) -> dict[str, Any]:
        """The stage's config as JSON (not parsed by MONAI: references stay strings)."""
        return dict(json.loads(self.config_file.read_text()))

    @property
    def uses_labels(self) -> bool:
        """Whether the stage reads labels: ``train`` always; a first stage when it says ``pretrain_uses_labels``
        (the teacher of online pseudo-labelling), not a self-supervised pretraining (S2MTS2)."""
        return self.name == STAGES[-1] or bool(self.read().get("pretrain_uses_labels", False))


@dataclass(frozen=True)
class StageRun:
    """What :func:`run_command` measured: exit code, wall seconds and the child's peak resident memory (MiB)."""

    code: int
    wall_s: float
    peak_rss_mib: float


def bundle_configs(bundle: str | os.PathLike) -> Path:
    """The ``configs/`` folder of ``bundle``: a bundle folder, or a name found by :func:`s4mi.bundle.locate_bundle_root`.

    Raises:
        FileNotFoundError: no such bundle folder or name.
    """
    given = Path(bundle)
    if (given / "configs").is_dir():
        return given / "configs"
    return Path(locate_bundle_root(str(bundle))) / "configs"


def bundle_stages(bundle: str | os.PathLike, names: Sequence[str] | None = None) -> list[Stage]:
    """The stages of ``bundle`` in run order: those of :data:`STAGES` whose config exists, or ``names``.

    Raises:
        StageError: a stage of ``names`` has no config file (the message names the bundle, stage and file), or the
            bundle has no stage at all.
        FileNotFoundError: no such bundle.
    """
    configs = bundle_configs(bundle)
    if names is None:
        stages = [Stage(n, configs / f"{n}.json") for n in STAGES if (configs / f"{n}.json").is_file()]
        if not stages:
            raise StageError(f"{bundle} has no stage: none of {', '.join(f'{n}.json' for n in STAGES)} in {configs}")
        return stages
    stages = [Stage(n, configs / f"{n}.json") for n in names]
    for stage in stages:
        if not stage.config_file.is_file():
            raise StageError(f"{bundle} has no stage {stage.name!r} ({stage.config_file} not found)")
    return stages


def _as_config(config: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))  # a "+key" merge below updates values in place
    path = Path(config)
    if path.is_dir():  # a bundle folder: its last stage
        path = bundle_configs(path) / f"{STAGES[-1]}.json"
    return dict(json.loads(path.read_text()))


def is_semi_supervised(
    config: Mapping[str, Any] | str | os.PathLike, overlays: Sequence[Mapping[str, Any] | str | os.PathLike] = ()
) -> bool:
    """True when training with ``config`` (merged with ``overlays``) draws an unlabelled stream.

    The files are merged as ``monai.bundle`` merges several config files (a later top-level key replaces an earlier
    one, a ``+key`` merges into it, ``a#b`` keys set nested values). The result is semi-supervised when it has a
    ``train#unlabeled_dataset`` or a ``train#loader`` that is a :class:`s4mi.data.loaders.SemiSupervisedLoader`, as
    every s4mi semi-supervised bundle has, unless it says ``"semi_supervised": false`` (an overlay that trains
    nothing, e.g. ``export_teacher.json``).

    Args:
        config: a train config (as a dict, a JSON file, or a bundle folder for its ``configs/train.json``).
        overlays: configs merged over it, in order.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    parser = ConfigParser(config={})
    for part in (config, *overlays):
        for key, value in _as_config(part).items():
            merge_kv(parser, key, value)
    said = parser.get("semi_supervised")
    if said is not None:
        return bool(said)
    if parser.get("train#unlabeled_dataset") is not None:
        return True
    return str(parser.get("train#loader#_target_") or "").endswith("SemiSupervisedLoader")


def first_stage_overrides(stage: Stage, overrides: Mapping[str, Any], stage_dir: str | os.PathLike) -> dict[str, Any]:
    """Overrides that run a first stage in a folder of its own, ``stage_dir``, so that later runs can share it.

    Its ``output_dir`` and ``ckpt_dir`` (``stage_dir/models``) are set. A stage that reads no label (self-supervised
    pretraining) reads every training image, whatever the label fraction: ``label_fraction`` is 1 and
    ``samples_per_epoch`` (equal steps across label fractions) is dropped, so one run serves every fraction.
    """
    out = {**overrides, "output_dir": str(stage_dir), "ckpt_dir": str(Path(stage_dir) / "models")}
    if not stage.uses_labels:
        out["label_fraction"] = 1.0
        out.pop("samples_per_epoch", None)
    return out


def next_stage_overrides(stage_dir: str | os.PathLike) -> dict[str, Any]:
    """The override that links a stage run by :func:`first_stage_overrides` in ``stage_dir`` to the next stage."""
    return {"pretrained_ckpt": str(Path(stage_dir) / "models" / PRETRAINED_FILE)}


def model_start_overrides(config: Mapping[str, Any], bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """Overrides that run only the last stage, starting from the bundle's ``models/model.pt`` (MONAI Label).

    MONAI Label runs ``configs/train.json`` and nothing else, loading ``models/model.pt`` first. A two-stage
    bundle's model already holds what its first stage made (the fine-tuned backbone, or the student trained from the
    teachers), so its ``pretrained_ckpt`` is set to ``""`` and the first stage's weights are not needed. Without a
    ``models/model.pt`` nothing is changed.
    """
    if "pretrained_ckpt" in config and (Path(bundle_dir) / "models" / "model.pt").is_file():
        return {"pretrained_ckpt": ""}
    return {}


def cli_value(value: Any) -> str:
    """A value as ``python -m monai.bundle run`` reads it: fire parses Python literals (False, None), not JSON."""
    return value if isinstance(value, str) else repr(value)


def defined_overrides(
    config_files: Sequence[str | os.PathLike], configs: str | os.PathLike, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``overrides`` whose keys the merged ``config_files`` define: a bundle run stops on any other key
    (:func:`s4mi.bundle.check_overrides`), and a grid hands every stage the same settings."""
    from .overrides import defines_key, load_stage_config

    parser = load_stage_config([str(f) for f in config_files], str(Path(configs) / "metadata.json"))
    return {k: v for k, v in overrides.items() if defines_key(parser, k)}


def monai_bundle_command(
    config_files: Sequence[str | os.PathLike], configs: str | os.PathLike, overrides: Mapping[str, Any] | Sequence[str]
) -> list[str]:
    """``python -m monai.bundle run`` of ``config_files`` (merged in order) with the bundle's metadata and logging.

    ``overrides`` is a dict (``--key value`` each, values through :func:`cli_value`) or arguments as they are.
    """
    files = [str(f) for f in config_files]
    configs = Path(configs)
    if isinstance(overrides, Mapping):
        args = [x for k, v in overrides.items() for x in (f"--{k}", cli_value(v))]
    else:
        args = [str(x) for x in overrides]
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        files[0] if len(files) == 1 else json.dumps(files),
        "--meta_file",
        str(configs / "metadata.json"),
        "--logging_file",
        str(configs / "logging.conf"),
        *args,
    ]


def run_command(
    cmd: Sequence[str], log: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> StageRun:
    """Run ``cmd`` (its output to ``log``, else to this process's) and measure it.

    The peak resident memory is the child's own (``os.wait4``), not this process's.
    """
    start = time.perf_counter()
    environ = dict(os.environ if env is None else env)
    if log is None:
        proc = subprocess.Popen(list(cmd), env=environ)
        _, status, usage = os.wait4(proc.pid, 0)
    else:
        with open(log, "w") as f:
            proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=environ)
            _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return StageRun(proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024.0)  # Linux: KiB


def run_stages(
    bundle: str | os.PathLike,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    names: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    run: Callable[..., StageRun] = run_command,
) -> list[StageRun]:
    """Run the stages of ``bundle`` (all, or ``names``) in order with the same overrides, as ``s4mi run`` does.

    Every stage is checked before the first runs. The stages share ``output_dir`` and ``ckpt_dir``: the split is
    made once (``output_dir/split.json``) and the second stage reads the first one's ``pretrained.pt`` through the
    bundles' default ``pretrained_ckpt``.

    Args:
        bundle: bundle folder or name.
        overrides: ``--key value`` overrides: a dict goes to every stage; command-line arguments as they are go to
            each stage that defines the key (:func:`s4mi.bundle.overrides.route_overrides`).
        names: stages to run (default: all, see :func:`bundle_stages`).
        env: the children's environment (default: this process's).
        echo: told each stage's command before it runs.
        run: runs one command (:func:`run_command`; tests replace it).

    Raises:
        BundleConfigError: an override no stage defines, or ``max_epochs`` without ``pretrain_epochs``.
        StageError: a stage is missing, or a stage failed (the message names the stage, bundle and exit code); the
            later stages do not run.
    """
    stages = bundle_stages(bundle, names)
    per_stage: dict[str, Mapping[str, Any] | Sequence[str]] = {stage.name: overrides for stage in stages}
    if not isinstance(overrides, Mapping):
        # command-line overrides: each stage gets the keys its config defines (an unknown key stops the run here)
        from .overrides import load_stage_config, route_overrides, split_cli_overrides

        split = split_cli_overrides(list(overrides))
        parsers = {
            stage.name: load_stage_config(stage.config_file, stage.configs / "metadata.json") for stage in stages
        }
        routed = route_overrides(parsers, split)
        for stage in stages:
            per_stage[stage.name] = [t for _, tokens in routed[stage.name] for t in tokens]
            skipped = [k for k, _ in split if k not in {key for key, _ in routed[stage.name]}]
            if skipped and echo is not None:
                echo(f"stage {stage.name} does not define {', '.join(skipped)}: not passed to it")
    done = []
    for stage in stages:
        cmd = monai_bundle_command([stage.config_file], stage.configs, per_stage[stage.name])
        if echo is not None:
            echo(f"{bundle} stage {stage.name}: {shlex.join(cmd[1:])}")
        result = run(cmd, env=env)
        if result.code != 0:
            raise StageError(f"stage {stage.name} of {bundle} failed (exit {result.code})")
        done.append(result)
    return done


def require_first_stage(
    path: str | os.PathLike,
    resume_ckpt: str | os.PathLike = "",
    bundle: str = "the bundle",
    key: str = "pretrained_ckpt",
) -> Path | None:
    """Stop a second stage, before it builds anything, when the first stage's weights are not there.

    Called first in the ``run`` list of a two-stage bundle's ``train.json``. The loaders it guards
    (:func:`s4mi.handlers.load_pretrained_backbone`, :func:`s4mi.handlers.load_teacher`) raise a
    ``FileNotFoundError`` that MONAI would bury under "Failed to evaluate ConfigExpression"; this raises
    :class:`~s4mi.bundle.BundleConfigError`, so the user's last line says what to run.

    Args:
        path: the first stage's output (``pretrained_ckpt``); empty means "train without it" and passes.
        resume_ckpt: the run's resume checkpoint; a resumed run holds its weights already and passes.
        bundle: the bundle's name, for the message.
        key: the config key of ``path``, for the message.

    Returns:
        the path when it is needed and there, else None.

    Raises:
        BundleConfigError: ``path`` is needed and missing.
    """
    if resume_ckpt or not str(path):
        return None
    p = Path(path)
    if p.is_file():
        return p
    raise BundleConfigError(
        f"s4mi: configs/train.json of {bundle} starts from its first stage's weights, but {key} = {str(p)!r} does "
        f"not exist. Run configs/pretrain.json first with the same --output_dir/--ckpt_dir (or `s4mi run {bundle}`, "
        f"which runs both stages), point --{key} at that stage's file, or pass --{key} '' to train without it."
    )
