"""Command-line overrides of a bundle run: reject a key that names nothing in the bundle's configs.

``python -m monai.bundle run --config_file configs/train.json --key value`` hands every ``--key value`` pair to
``ConfigParser.update``, which *adds* a key the configs do not have: a misspelt key, or ``--max_epochs 1`` on a
stage that counts ``pretrain_epochs``, is accepted and does nothing. MONAI keeps no record of which keys came from
the command line, so :func:`check_overrides` (the first entry of every s4mi bundle's ``initialize`` list) reads
them back from ``sys.argv`` the way ``fire`` parsed them, loads the same config files afresh, and stops the run
naming the closest known key. ``s4mi run`` and ``s4mi benchmark`` use :func:`route_overrides` to give each stage of
a two-stage bundle the keys that stage defines.

Errors are :class:`BundleConfigError`, a ``SystemExit``: MONAI wraps every ``Exception`` raised while evaluating a
config expression in ``RuntimeError("Failed to evaluate ...")`` (``ConfigExpression.evaluate``), which would bury
the message under its own; a ``SystemExit`` passes through and the interpreter prints just the message.
"""

from __future__ import annotations

import ast
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "STAGE_KEYS",
    "BundleConfigError",
    "check_overrides",
    "config_ids",
    "defines_key",
    "load_stage_config",
    "route_overrides",
    "split_cli_overrides",
    "tracking_keys",
    "unknown_override",
    "wrong_type_override",
]

#: Arguments of ``monai.bundle.scripts.run`` itself: not config overrides.
RUN_ARGS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)

#: A key of configs/train.json -> the key a pretraining stage (configs/pretrain.json) uses for the same setting.
STAGE_KEYS = {
    "max_epochs": "pretrain_epochs",
    "batch_size": "pretrain_batch_size",
    "learning_rate": "pretrain_learning_rate",
}

_SPECIAL = ("_target_", "_disabled_", "_requires_", "_mode_", "_desc_")


class BundleConfigError(SystemExit):
    """A bundle run stopped on a setting: the message is the last (and only) line the user reads.

    A ``SystemExit`` (exit status 1 with its message on stderr) so that MONAI's config evaluation, which wraps
    every ``Exception`` in its own "Failed to evaluate" error, lets it through unchanged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def split_cli_overrides(tokens: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``--key value`` / ``--key=value`` / ``--flag`` tokens -> ``[(key, the tokens that gave it)]``, as fire reads them.

    Positional tokens (``run``, a ``run_id``) are skipped; a ``-`` in a key is read as ``_`` (fire does the same).
    """
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            i += 1
            continue
        name = tok[2:]
        if "=" in name:
            key, given = name.split("=", 1)[0], [tok]
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            key, given = name, [tok, tokens[i + 1]]
            i += 2
        else:
            key, given = name, [tok]
            i += 1
        out.append((key.replace("-", "_"), given))
    return out


def _value(given: list[str]) -> Any:
    raw = given[0].split("=", 1)[1] if "=" in given[0] else (given[1] if len(given) > 1 else "True")
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def load_stage_config(
    config_files: str | os.PathLike | Sequence[str | os.PathLike], meta_file: str | os.PathLike | None = None
) -> Any:
    """The merged content of ``config_files`` (and ``_meta_`` from ``meta_file``) as a MONAI ``ConfigParser``."""
    from monai.bundle import ConfigParser

    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if meta_file:
        parser.read_meta(str(meta_file))
    return parser


def config_ids(config: Any, prefix: str = "") -> list[str]:
    """Every id of a config (``a``, ``a#b``, ``a#b#0``...), depth first."""
    ids: list[str] = []
    items: Any = (
        config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    )
    for k, v in items:
        cid = f"{prefix}#{k}" if prefix else str(k)
        ids.append(cid)
        ids.extend(config_ids(v, cid))
    return ids


def defines_key(parser: Any, key: str) -> bool:
    """Whether the config in ``parser`` defines ``key`` (or a special field such as ``_disabled_`` of it)."""
    key = key.replace("::", "#")
    if key in parser or key.startswith("_meta_"):
        return True
    parent, _, last = key.rpartition("#")
    return bool(parent) and last in _SPECIAL and parent in parser


def unknown_override(
    parser: Any, key: str, value: Any = None, where: str = "the config", candidates: Sequence[str] | None = None
) -> str | None:
    """None when ``key`` names something in ``parser``'s config, else the message saying what to use instead.

    Args:
        parser: a MONAI ``ConfigParser`` holding the configs as committed (no overrides).
        key: the override id (``max_epochs``, ``train#trainer#amp``).
        value: its value, for the hint.
        where: the config files, for the message.
        candidates: the ids to suggest from (default: every id of ``parser``'s config).
    """
    if defines_key(parser, key):
        return None
    stage_key = STAGE_KEYS.get(key)
    if stage_key is not None and stage_key in parser:
        return (
            f"s4mi: --{key} names nothing in {where}: this stage counts that setting in {stage_key} "
            f"({parser[stage_key]!r}); pass --{stage_key} {value!r} instead"
        )
    ids = config_ids(parser.get()) if candidates is None else candidates
    close = difflib.get_close_matches(key, ids, n=1, cutoff=0.6)
    hint = f"; did you mean --{close[0]}?" if close else ""
    return (
        f"s4mi: --{key} names nothing in {where}{hint} (to add a new key on purpose, also pass "
        "--strict_overrides False)"
    )


def _kind(value: Any) -> str | None:
    """The kind of a literal config value that an override must keep, or None when any value may replace it (an
    expression, a reference, ``None``, a component)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and value and value[0] not in "$@%":
        return "a string"
    return None


def wrong_type_override(parser: Any, key: str, value: Any, where: str = "the config") -> str | None:
    """None when ``value`` may replace the literal value of ``key`` in ``parser``'s config, else the message.

    ``--max_epochs ten`` or ``--spatial_size 64`` would otherwise fail later, deep inside MONAI or PyTorch, or not
    at all (``--learning_rate "1e-3"`` as a string). A bool key takes ``True``/``False`` (or the strings fire passes),
    a number key any number, a list key a list; string keys, and keys whose committed value is an expression, a
    reference, ``null`` or a component, take anything (as does a given expression or reference).
    """
    key = key.replace("::", "#")
    if not defines_key(parser, key) or key not in parser:
        return None
    want = _kind(parser[key])
    if want is None or value is None:
        return None
    got = _kind(value)
    if want == "a boolean" and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return None
    if want == "a string" or got is None:
        return None  # fire reads "1.0" as a number; an expression or a component given is the user's choice
    if isinstance(value, str) and value[:1] in "$@%":
        return None
    if got == want:
        return None
    return (
        f"s4mi: --{key} {value!r} is {got or type(value).__name__} but {key} is {want} in {where} "
        f"(committed value {parser[key]!r})"
    )


def tracking_keys(tracking: Any) -> set[str]:
    """The top-level keys that ``--tracking <name or file>`` adds to a config (``tracking_uri``, ``run_name``...)."""
    if not tracking:
        return set()
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    elif isinstance(tracking, dict):
        settings = tracking
    else:
        settings = ConfigParser.load_config_files(tracking)
    configs: Any = dict(settings).get("configs") or {}
    return set(configs)


def _argv_overrides(argv: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, list[str]]]] | None:
    """The run arguments and overrides of a ``python -m monai.bundle run`` command line, or None for another one."""
    if not argv or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py"):
        return None
    positional = [t for t in argv[1:2] if not t.startswith("--")]
    if positional != ["run"]:
        return None
    pairs = split_cli_overrides(argv[2:])
    run_args = {k: _value(g) for k, g in pairs if k in RUN_ARGS}
    overrides = [(k, g) for k, g in pairs if k not in RUN_ARGS]
    if "args_file" in run_args:  # fire's defaults file: its keys override too, the command line winning
        from monai.bundle import ConfigParser

        given = {k for k, _ in overrides}
        for k, v in ConfigParser.load_config_file(str(run_args["args_file"])).items():
            if k in RUN_ARGS:
                run_args.setdefault(k, v)
            elif k not in given:
                overrides.append((k, [f"--{k}={v!r}"]))
    return run_args, overrides


def check_overrides(strict: object = True, argv: Sequence[str] | None = None) -> list[str]:
    """Stop a ``python -m monai.bundle run`` whose command line overrides a key that its config files lack.

    Every s4mi bundle config calls this first in ``initialize``. It does nothing when the process is not
    ``python -m monai.bundle run`` (a ``ConfigWorkflow`` made in Python, MONAI Label) or when ``strict`` is false
    (``--strict_overrides False``: a user adding new keys on purpose).

    Args:
        strict: the config's ``strict_overrides`` (a bool, or the string fire passes).
        argv: the command line (default ``sys.argv``).

    Returns:
        the override keys checked.

    Raises:
        BundleConfigError: naming every unknown key with the closest known one, or the key a pretraining stage uses
            (``pretrain_epochs`` for ``max_epochs``), and every value of another kind than the committed one
            (:func:`wrong_type_override`).
    """
    from s4mi.bundle import as_bool

    parsed = _argv_overrides(sys.argv if argv is None else argv)
    if parsed is None or not as_bool(strict):
        return []
    run_args, overrides = parsed
    files = run_args.get("config_file")
    if not files:
        return []
    parser = load_stage_config(files, run_args.get("meta_file"))
    names = [files] if isinstance(files, str) else list(files)
    where = " + ".join(names)
    extra = tracking_keys(run_args.get("tracking"))
    problems = [
        m
        for k, g in overrides
        if k not in extra
        and (m := unknown_override(parser, k, _value(g), where) or wrong_type_override(parser, k, _value(g), where))
        is not None
    ]
    if problems:
        raise BundleConfigError("\n".join(problems))
    return [k for k, _ in overrides]


def route_overrides(
    stages: Mapping[str, Any], overrides: Sequence[tuple[str, list[str]]], what: str = "s4mi run"
) -> dict[str, list[tuple[str, list[str]]]]:
    """Give each stage of a multi-stage bundle the overrides that its config defines.

    Args:
        stages: stage name -> its ``ConfigParser`` (:func:`load_stage_config`), in run order.
        overrides: ``(key, tokens)`` from :func:`split_cli_overrides`.
        what: the command, for messages.

    Returns:
        stage name -> the overrides (``(key, tokens)``) to pass it. ``monai.bundle run``'s own arguments go to every stage;
        with ``--strict_overrides False`` every key goes to every stage.

    Raises:
        BundleConfigError: a key no stage defines (with the closest known key), or a key that a later stage
            defines and a pretraining stage names differently (``max_epochs`` vs ``pretrain_epochs``) when the
            pretraining key was not given too: the pretraining stage would silently keep its default.
    """
    from s4mi.bundle import as_bool

    given = {k for k, _ in overrides}
    extra = tracking_keys(next((_value(g) for k, g in overrides if k == "tracking"), None))
    strict = all(as_bool(_value(g)) for k, g in overrides if k == "strict_overrides")
    routed: dict[str, list[tuple[str, list[str]]]] = {s: [] for s in stages}
    problems: list[str] = []
    for key, tokens in overrides:
        owners = [s for s, p in stages.items() if key in RUN_ARGS | extra or not strict or defines_key(p, key)]
        if not owners:
            ids = sorted({i for p in stages.values() for i in config_ids(p.get())})
            where = f"any stage ({', '.join(stages)})"
            msg = unknown_override(list(stages.values())[-1], key, _value(tokens), where, candidates=ids)
            problems.append(f"{what}: {str(msg).removeprefix('s4mi: ')}")
            continue
        for stage, parser in stages.items():
            if stage in owners:
                routed[stage].append((key, tokens))
                continue
            stage_key = STAGE_KEYS.get(key)
            if stage_key is not None and stage_key in parser and stage_key not in given:
                problems.append(
                    f"{what}: --{key} sets {', '.join(owners)}; stage {stage} counts it in {stage_key} "
                    f"({parser[stage_key]!r}): pass --{stage_key} {_value(tokens)!r} too (or --stages "
                    f"{' '.join(owners)})"
                )
    if problems:
        raise BundleConfigError("\n".join(problems))
    return routed
