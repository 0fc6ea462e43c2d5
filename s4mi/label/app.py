"""A MONAI Label app for s4mi bundles (imports monailabel: use it in .venv-label).

It is the stock ``monaibundle`` sample app (bundles under ``<app>/model/<name>``, chosen with ``--conf models``)
with four changes: trainers are :class:`s4mi.label.S4miBundleTrainTask` (semi-supervised bundles also train on
the datastore's unlabelled images), batch inference writes ``pseudo``-tagged labels by default, no inference may
save a label under the annotators' ``final`` tag, and a bundle without weights is kept: ``/infer`` answers an error
naming the missing ``models/model.pt`` until ``/train`` (or a copy) puts it there, then infers with it, no restart.
No SAM2 and no model-zoo download.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import monailabel
import torch
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import get_bundle_models, strtobool

from .overrides import FINAL_TAG, PSEUDO_TAG
from .pseudo import save_pseudo_label
from .tasks import S4miBundleTrainTask
from .weights import missing_weights, no_weights_message

__all__ = ["S4miApp"]

logger = logging.getLogger(__name__)


class S4miApp(MONAILabelApp):
    """MONAI Label app serving the s4mi bundles named by ``--conf models a,b`` from ``<app>/model/``.

    MONAI Label's ``BundleInferTask`` drops a bundle that has no ``models/model.pt`` (nor ``model.ts``) with one log
    line, and ``/infer`` then fails with a bare HTTP 500. Here such a bundle is remembered instead: the server says at
    start which file is missing (a warning per bundle), ``/infer/<name>`` answers HTTP 404 with that message
    (:func:`s4mi.label.no_weights_message`), and as soon as the file exists (``/train/<name>`` writes it) the next
    ``/info`` or ``/infer`` loads the bundle and infers with it, without a restart. A bundle that had weights at start
    needs nothing: MONAI Label reloads ``models/model.pt`` whenever its modification time changes.
    """

    #: HTTP status of ``/infer`` for a bundle without weights: the weights are not found
    NO_WEIGHTS_STATUS = 404

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.without_weights: dict[str, str] = {}  # model name -> bundle folder; filled by init_infers
        self._weights_lock = threading.Lock()
        self.model_dir = os.path.join(app_dir, "model")
        conf = dict(conf or {})
        conf.setdefault("zoo_source", "github")  # local bundles only: never ask NGC for a bundle list
        self.models = get_bundle_models(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"s4mi bundles ({monailabel.__version__})",
            description="s4mi self- and semi-supervised MONAI bundles",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for n, b in self.models.items():
            if missing_weights(b) is not None:
                self.without_weights[n] = b
                logger.warning(no_weights_message(n, b))
                continue
            task = BundleInferTask(b, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Inferer:: {n} => {task}")
                infers[n] = task
        return infers

    def load_new_weights(self) -> list[str]:
        """Add an inferer for every bundle kept without weights whose weights now exist; return their names."""
        added = []
        with self._weights_lock:
            for n, b in list(self.without_weights.items()):
                if missing_weights(b) is not None:
                    continue
                task = BundleInferTask(b, self.conf)
                if task.is_valid():
                    logger.info(f"+++ Adding Inferer:: {n} => {task} (s4mi: its weights appeared; no restart needed)")
                    self._infers[n] = task
                    del self.without_weights[n]
                    added.append(n)
        return added

    def info(self) -> dict[str, Any]:
        self.load_new_weights()
        return dict(super().info())

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for n, b in self.models.items():
            task = S4miBundleTrainTask(b, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {n} => {task} (semi-supervised: {task.semi_supervised})")
                trainers[n] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's inference; a label saved under the ``pseudo`` tag goes through :func:`save_pseudo_label`
        (info ``"pseudo": True``), and saving under ``final`` is refused."""
        model = request.get("model")
        if model in self.without_weights and model not in self.load_new_weights():
            raise HTTPException(self.NO_WEIGHTS_STATUS, detail=no_weights_message(model, self.without_weights[model]))
        save = strtobool(str(request.get("save_label", False)))
        tag = str(request.get("label_tag") or "")
        if save and tag.strip().lower() == FINAL_TAG:
            raise ValueError(f"s4mi: inference never saves a label under the annotators' tag {FINAL_TAG!r}")
        if not (save and tag == PSEUDO_TAG):
            return super().infer(request, datastore)
        result = super().infer({**request, "save_label": False}, datastore)
        image_id = request.get("image")
        if result.get("file") and isinstance(image_id, str) and not os.path.exists(image_id):
            info = {"model": request.get("model"), "params": result.get("params")}
            result["label"] = save_pseudo_label(datastore or self.datastore(), image_id, result["file"], info=info)
            result["tag"] = PSEUDO_TAG
        return result

    def batch_infer(self, request: dict[str, Any], datastore: Any = None) -> Any:
        """Batch inference (``/batch/infer/<model>``) saves its labels as ``pseudo`` unless told another tag."""
        request = dict(request)
        request.setdefault("label_tag", PSEUDO_TAG)
        if not torch.cuda.is_available():  # MONAI Label 0.8.5 divides by the GPU count when multi_gpu is on
            request["multi_gpu"] = False
        return super().batch_infer(request, datastore)
