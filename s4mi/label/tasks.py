"""MONAI Label train task for s4mi bundles (imports monailabel: use it in .venv-label)."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from s4mi.bundle.stages import is_semi_supervised

from .overrides import s4mi_overrides

__all__ = ["S4miBundleTrainTask", "SemiSupervisedBundleTrainTask"]

logger = logging.getLogger(__name__)


class S4miBundleTrainTask(BundleTrainTask):
    """MONAI Label's ``BundleTrainTask`` for s4mi bundles, supervised or semi-supervised.

    MONAI Label trains a bundle on the datastore's labelled images (``final`` tag) only. For a semi-supervised
    bundle (one with ``train#unlabeled_dataset``, trained by a :class:`s4mi.engines.SemiSupervisedTrainer`) this
    task also passes the datastore's unlabelled images (``datastore.get_unlabeled_images()``) as
    ``train#unlabeled_dataset#data``, and logs ``s4mi: N labelled, M unlabelled images``. Every bundle also gets the
    overrides of :func:`s4mi.label.s4mi_overrides` (fresh run from ``models/model.pt``, ``max_epochs``, device).

    Args: those of ``BundleTrainTask`` (``path``: the bundle folder; ``conf``: the app's conf).
    """

    def __init__(self, path: str, conf: dict[str, str], *args: Any, **kwargs: Any) -> None:
        super().__init__(path, conf, *args, **kwargs)
        self._unlabeled: list[dict[str, str]] = []
        self._n_labeled = 0

    @property
    def semi_supervised(self) -> bool:
        return bool(self.valid) and is_semi_supervised(self.bundle_config.config)  # type: ignore[arg-type]

    def info(self) -> dict[str, Any]:
        i = super().info()
        i["semi_supervised"] = self.semi_supervised
        return i

    def _fetch_datalist(self, request: dict, datastore: Datastore) -> list[dict[str, Any]]:
        datalist = super()._fetch_datalist(request, datastore)
        self._n_labeled = len(datalist)
        self._unlabeled = []
        if self.semi_supervised:
            ids = sorted(datastore.get_unlabeled_images())
            self._unlabeled = [{"image": datastore.get_image_uri(i)} for i in ids]
        return datalist

    def _unlabeled_batch_size(self) -> int | None:
        try:
            value = self.bundle_config.get_parsed_content("unlabeled_batch_size", instantiate=False)
            return int(value)
        except (KeyError, TypeError, ValueError):
            return None

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        extra = s4mi_overrides(
            self.bundle_config.config,  # type: ignore[arg-type]
            self.bundle_path,
            overrides,
            unlabeled=self._unlabeled,
            unlabeled_batch_size=self._unlabeled_batch_size() if self.semi_supervised else None,
        )
        overrides.update(extra)
        n_train = len(overrides.get("train#dataset#data") or [])
        n_val = len(overrides.get("validate#dataset#data") or [])
        line = (
            f"s4mi: {self._n_labeled} labelled, {len(self._unlabeled)} unlabelled images"
            f" ({n_train} train, {n_val} validation; bundle {self.bundle_path})"
        )
        logger.info(line)
        print(line, flush=True)  # MONAI Label's /train task log keeps stdout
        return overrides


# the name the issue and the docs use for the semi-supervised case; the same task handles supervised bundles
SemiSupervisedBundleTrainTask = S4miBundleTrainTask
