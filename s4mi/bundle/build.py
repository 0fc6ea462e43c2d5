"""Build every bundle folder's configs from shared parts: ``s4mi bundles build [--check]``.

A bundle's configs are merged from YAML *parts* under ``bundles/_parts/``: ``base`` (what every bundle shares),
a kind and a task part (network, transforms, metrics, inferer, phantom), a method part (trainer, teachers, ramps,
views, stages) and last the bundle's own file ``bundles/_parts/bundles/<name>.yaml``, which lists its parts and
holds the few values that are its own. The output is ordinary, self-contained MONAI bundle JSON, committed as
it is: ``python -m monai.bundle``, the model-zoo checks and MONAI Label read it without knowing parts exist.

MONAI's own config merging (``ConfigParser.update`` and the ``+``/``~`` prefixes of MONAI 1.6) works on one
config at run time and replaces lists whole; a bundle needs its files written out, and its handler lists
composed from named entries, so the merge here is a small one of our own:

* mappings merge key by key, later parts winning; other values (lists included) are replaced. A key new to the
  mapping goes right after the key that precedes it in the later part (when the earlier mapping has that key),
  else last. Order is not cosmetic: MONAI instantiates a component's references in key order, so the order of,
  say, a resume checkpoint's ``save_dict`` decides which network or queue draws its random initial weights
  first. To put ``key_encoder`` after ``model``, a part writes ``{model: '@network', key_encoder: ...}``;
* ``!keyed`` marks a list written as a mapping of named entries (handler lists): entries merge by name, a new
  entry goes last or, with ``_before_: <name>``, before an existing one (resolved when that entry is there,
  which may be only once the file extends its template); the built file holds a plain list;
* ``!delete`` removes a key (or a keyed entry) that an earlier part or the file's template set;
* ``!replace`` on a mapping replaces the earlier mapping instead of merging into it;
* the value ``<required>`` marks what a later part must give; a built config still holding it is an error;
* a file named ``_<name>.json`` is a template, not written: a file that says ``_extends_: _<name>.json`` starts
  from the template's fully merged content and its own values win. ``base`` makes ``_model.json`` (what
  training and inference share: the data, the network, the device), ``_stage.json`` (one training stage:
  loaders, trainer, validation, resume checkpoints) on top of it, and ``train.json``, ``inference.json`` and a
  method's ``pretrain.json`` from those, so a task part writes its network and transforms once for every stage.

Top-level keys of a built config are written as the model zoo writes them: ``imports``, the plain values (the
hyperparameters a user overrides), the values derived by ``$``/``@`` expressions, the components, and last
``initialize``, ``run``, ``finalize``; within each group, in the order the parts first name them (so ``base``
fixes the order of the shared keys). ``_target_`` leads every component.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["REQUIRED", "Keyed", "build", "build_bundle", "check", "load_part", "merge", "render"]

REQUIRED = "<required>"
PARTS = "_parts"
_TAIL = ("initialize", "run", "finalize")
_FIRST = ("_target_", "_requires_", "_disabled_", "_mode_")


class Keyed(dict):
    """A list written as a mapping of named entries (``!keyed`` in a part); rendered as the list of its values."""


class Replace(dict):
    """A mapping that replaces, rather than merges into, what earlier parts set (``!replace``)."""


class _Delete:
    def __repr__(self) -> str:
        return "!delete"

    def __deepcopy__(self, memo: dict) -> _Delete:  # one sentinel, compared with `is`
        return self


DELETE = _Delete()


class _Loader(yaml.SafeLoader):
    pass


def _mapping(cls: type) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, f"{node.tag} needs a mapping", node.start_mark)
        return cls(loader.construct_mapping(node, deep=True))

    return construct


_Loader.add_constructor("!keyed", _mapping(Keyed))
_Loader.add_constructor("!replace", _mapping(Replace))
_Loader.add_constructor("!delete", lambda loader, node: DELETE)


def load_part(path: str | os.PathLike) -> dict[str, Any]:
    """Read one part: a mapping of output file name (``train.json``, ``logging.conf``, ...) to its content.

    Raises:
        ValueError: the file is not a YAML mapping; names the file.
    """
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader with 3 tags
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a part must be a mapping of file names to contents, got {type(data).__name__}")
    return data


def _insert(out: dict[str, Any], at: int, key: str, value: Any) -> None:
    items = list(out.items())
    out.clear()
    out.update([*items[:at], (key, copy.deepcopy(value)), *items[at:]])


def merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base`` (neither is changed), by the rules of the module docstring."""
    if isinstance(over, Replace) or not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)  # a Replace stays one until the file is extended and rendered
    out: dict[str, Any]
    if isinstance(base, Keyed) or isinstance(over, Keyed):
        out = Keyed()
    else:
        out = Replace() if isinstance(base, Replace) else {}
    out.update(base)
    anchor = None  # the last key of `over` that `out` already holds: a new key goes right after it
    for key, value in over.items():
        if value is DELETE:
            if key in out:
                del out[key]
            else:  # kept until the file extends its template; render() refuses one that removes nothing
                out[key] = DELETE
        elif key in out:
            out[key] = merge(out[key], value)
            anchor = key
        elif isinstance(out, Keyed) and isinstance(value, dict) and value.get("_before_") in out:
            value = {k: v for k, v in value.items() if k != "_before_"}
            _insert(out, list(out).index(over[key]["_before_"]), key, value)
        elif anchor is not None:
            _insert(out, list(out).index(anchor) + 1, key, value)
            anchor = key
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The JSON-ready config: keyed lists become lists, top-level keys are put in model-zoo order.

    Raises:
        ValueError: a value still ``<required>``, a leftover ``_before_`` or ``!delete``; names ``where`` and the key.
    """

    def plain(value: Any, path: str) -> Any:
        if value is DELETE:
            raise ValueError(f"{where}: !delete at {path} removes nothing (no earlier part sets it)")
        if value == REQUIRED:
            raise ValueError(f"{where}: {path} is {REQUIRED}: a task, method or bundle part must set it")
        if isinstance(value, Keyed):
            return [plain(v, f"{path}#{k}") for k, v in value.items()]
        if isinstance(value, dict):
            if "_before_" in value:
                raise ValueError(
                    f"{where}: _before_: {value['_before_']} at {path}: no such entry (it works on a new entry of a "
                    "!keyed list and names an entry of that list)"
                )
            first = [k for k in _FIRST if k in value]  # `_target_` leads, as MONAI and the model zoo write it
            keys = first + [k for k in value if k not in first]
            return {k: plain(value[k], f"{path}#{k}" if path else k) for k in keys}
        if isinstance(value, list):
            return [plain(v, f"{path}#{i}") for i, v in enumerate(value)]
        return value

    def rank(item: tuple[str, Any]) -> int:
        key, value = item
        if key in _TAIL:
            return 4 + _TAIL.index(key)
        if key == "imports":
            return 0
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
            return 3
        return 2 if isinstance(value, str) and value[:1] in ("$", "@", "%") else 1

    out = plain(config, "")
    return dict(sorted(out.items(), key=rank))  # sorted() is stable: first-appearance order within each rank


@dataclass
class BundleSpec:
    name: str
    parts: list[str]
    own: dict[str, Any]


def _spec(parts_dir: Path, name: str) -> BundleSpec:
    path = parts_dir / "bundles" / f"{name}.yaml"
    data = dict(load_part(path))
    parts = data.pop("parts", None)
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"{path}: needs `parts:`, a list of part names under {parts_dir} (e.g. base, tasks/...)")
    return BundleSpec(name, parts, data)


def build_bundle(parts_dir: str | os.PathLike, name: str) -> dict[str, str]:
    """The files of bundle ``name`` (relative path under ``configs/`` -> text), built from its parts.

    Raises:
        FileNotFoundError: a part named in the bundle's spec does not exist; names the spec and the part.
    """
    parts_dir = Path(parts_dir)
    spec = _spec(parts_dir, name)
    files: dict[str, Any] = {}
    for part in spec.parts:
        path = parts_dir / f"{part}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{parts_dir / 'bundles' / (name + '.yaml')}: part {part!r} not found ({path})")
        files = merge(files, load_part(path))
    files = merge(files, spec.own)
    out = {}
    for fname in files:
        if fname.startswith("_"):
            continue
        where = f"{name}/configs/{fname}"
        content = _extended(files, fname, where)
        if fname.endswith(".json"):
            if not isinstance(content, dict):
                raise ValueError(f"{where}: expected a mapping, got {type(content).__name__}")
            out[fname] = json.dumps(render(content, where), indent=4, ensure_ascii=False) + "\n"
        elif isinstance(content, str):
            out[fname] = content
        else:
            raise ValueError(f"{where}: a non-JSON file must be given as text")
    return out


def _extended(files: dict[str, Any], fname: str, where: str, seen: tuple[str, ...] = ()) -> Any:
    """``files[fname]`` merged over the template its ``_extends_`` names (recursively).

    Raises:
        ValueError: an unknown or circular template; names the bundle file.
    """
    content = files[fname]
    if not isinstance(content, dict) or "_extends_" not in content:
        return content
    content = dict(content)
    template = content.pop("_extends_")
    if template not in files or not str(template).startswith("_"):
        raise ValueError(f"{where}: _extends_ names {template!r}, which is no template (_<name>.json) of its parts")
    if template in seen:
        raise ValueError(f"{where}: circular _extends_: {' -> '.join((*seen, template))}")
    return merge(_extended(files, template, where, (*seen, fname)), content)


def bundle_names(bundles_dir: str | os.PathLike) -> list[str]:
    """Bundles that have a spec under ``<bundles_dir>/_parts/bundles``."""
    return sorted(p.stem for p in (Path(bundles_dir) / PARTS / "bundles").glob("*.yaml"))


def build(bundles_dir: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Write every bundle's configs from its parts; return bundle -> files changed.

    A file is written only when its text changes (atomically), so a build over an up-to-date tree touches nothing.
    """
    bundles_dir = Path(bundles_dir)
    changed: dict[str, list[str]] = {}
    for name in names or bundle_names(bundles_dir):
        configs = bundles_dir / name / "configs"
        for fname, text in build_bundle(bundles_dir / PARTS, name).items():
            target = configs / fname
            if target.is_file() and target.read_text() == text:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, target)
            changed.setdefault(name, []).append(fname)
    return changed


def check(bundles_dir: str | os.PathLike, names: Iterable[str] | None = None) -> list[str]:
    """Differences between committed bundle configs and what their parts build, one message per file (with a
    short unified diff); an empty list when every bundle is up to date. A config file in a bundle's
    ``configs/`` that its parts do not build is reported too."""
    bundles_dir = Path(bundles_dir)
    problems = []
    for name in names or bundle_names(bundles_dir):
        configs = bundles_dir / name / "configs"
        built = build_bundle(bundles_dir / PARTS, name)
        for fname, text in built.items():
            target = configs / fname
            if not target.is_file():
                problems.append(f"{target}: missing; `s4mi bundles build` writes it")
                continue
            have = target.read_text()
            if have != text:
                diff = difflib.unified_diff(
                    have.splitlines(), text.splitlines(), f"{target} (committed)", f"{target} (from parts)", n=1
                )
                problems.append(f"{target}: differs from what its parts build\n" + "\n".join(list(diff)[:40]))
        extra = sorted(p.name for p in configs.iterdir() if p.is_file() and p.name not in built)
        problems += [f"{configs / f}: not built from any part (add it to a part or delete it)" for f in extra]
    return problems
