"""s4mi bundles in MONAI Label 0.8.5.

MONAI Label lives in its own environment (``bash scripts/setup_label.sh`` makes ``.venv-label``); nothing here
imports ``monailabel`` at import time, so ``import s4mi.label`` works in the main environment too. What needs
MONAI Label is loaded on first use:

* :class:`S4miBundleTrainTask` (``s4mi.label.tasks``): MONAI Label's ``BundleTrainTask`` for s4mi bundles. For a
  semi-supervised bundle it feeds the datastore's unlabelled images to the bundle's unlabelled stream.
* :class:`S4miApp` (``s4mi.label.app``): a MONAI Label app, like the stock ``monaibundle`` sample app, that uses
  it; :func:`write_app` writes an app folder for ``monailabel start_server --app``.
* :func:`missing_weights`: a bundle without ``models/model.pt`` (or ``model.ts``), which MONAI Label cannot infer
  with; :func:`write_app` and :class:`S4miApp` say so, naming the file.
* :func:`studies_from_datalist`: a studies folder (images, ``labels/final``) from a datalist, e.g. a phantom's.
* :func:`save_pseudo_label`: write a model's label back into the datastore under the ``pseudo`` tag, never the
  annotators' ``final`` tag.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .overrides import FINAL_TAG, PSEUDO_TAG, is_semi_supervised, s4mi_overrides
from .pseudo import save_pseudo_label
from .studies import studies_from_datalist
from .weights import missing_weights, no_weights_message

if TYPE_CHECKING:
    from .app import S4miApp
    from .tasks import S4miBundleTrainTask, SemiSupervisedBundleTrainTask

__all__ = [
    "FINAL_TAG",
    "PSEUDO_TAG",
    "S4miApp",
    "S4miBundleTrainTask",
    "SemiSupervisedBundleTrainTask",
    "app_warnings",
    "is_semi_supervised",
    "missing_weights",
    "no_weights_message",
    "s4mi_overrides",
    "sample_app_dir",
    "save_pseudo_label",
    "studies_from_datalist",
    "write_app",
]

_LAZY = {
    "S4miBundleTrainTask": "tasks",
    "SemiSupervisedBundleTrainTask": "tasks",
    "S4miApp": "app",
}

APP_MAIN = '''"""MONAI Label app for s4mi bundles (written by `python -m s4mi.label app`)."""

from s4mi.label.app import S4miApp  # noqa: F401  (MONAI Label looks for a MONAILabelApp subclass in main.py)
'''


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sample_app_dir(name: str = "monaibundle") -> Path:
    """The folder of MONAI Label's sample app ``name``, shipped inside the monailabel wheel (no download).

    The wheel installs its sample apps under ``<environment>/monailabel/sample-apps``.

    Raises:
        FileNotFoundError: monailabel is not installed in this environment, or has no such sample app.
    """
    candidates = [Path(sys.prefix) / "monailabel" / "sample-apps" / name]
    try:  # a user-site or unusual install: next to the package's data folder
        import importlib.util

        spec = importlib.util.find_spec("monailabel")
        if spec and spec.origin:  # <prefix>/lib/pythonX.Y/site-packages/monailabel/__init__.py
            prefix = Path(spec.origin).resolve().parents[4]
            candidates.append(prefix / "monailabel" / "sample-apps" / name)
    except (ImportError, ValueError):
        pass
    for path in candidates:
        if (path / "main.py").is_file():
            return path
    raise FileNotFoundError(
        f"MONAI Label sample app {name!r} not found in {', '.join(map(str, candidates))}; run bash scripts/setup_label.sh"
        " and use .venv-label"
    )


def write_app(app_dir: str | Path, bundles: list[str | Path] | tuple[str | Path, ...] = ()) -> Path:
    """Write a MONAI Label app folder for s4mi bundles: ``main.py`` and ``model/<bundle>`` copies.

    Each bundle is copied without its ``runs/`` and ``eval/`` folders; its ``models/`` folder (the weights MONAI
    Label infers with, and trains into) is copied when present. A bundle copied without ``models/model.pt`` (nor
    ``model.ts``) cannot infer yet: :func:`app_warnings` says so, naming the file (``python -m s4mi.label app``
    prints it). Start it with
    ``monailabel start_server --app <app_dir> --studies <images> --conf models <name>[,<name>...]``.

    Returns:
        the app folder.
    """
    import shutil

    app = Path(app_dir)
    (app / "model").mkdir(parents=True, exist_ok=True)
    (app / "main.py").write_text(APP_MAIN)
    for b in bundles:
        src = Path(b)
        if not (src / "configs").is_dir():
            raise FileNotFoundError(f"{src} is not a bundle folder (no configs/)")
        dst = app / "model" / src.name
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("runs", "eval", "__pycache__"))
    return app


def app_warnings(app_dir: str | Path) -> list[str]:
    """One line per bundle under ``<app_dir>/model`` that has no weights to infer with (see :func:`missing_weights`)."""
    model = Path(app_dir) / "model"
    bundles = sorted(p for p in model.iterdir() if (p / "configs").is_dir()) if model.is_dir() else []
    return [no_weights_message(b.name, b) for b in bundles if missing_weights(b) is not None]
