"""Writing pseudo labels back to files: each item's hard label and confidence map in its source's geometry."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Compose, Invertd, InvertibleTransform, MapTransform, SaveImage

from s4mi.losses.targets import confidence, hard_labels

__all__ = ["PseudoLabelWriter"]

logger = logging.getLogger(__name__)

_PRED = "pred"


def _source_ext(filename: str) -> str:
    """The extension of a source file, keeping compound ones (``.nii.gz``)."""
    suffixes = Path(filename).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _is_dict_transform(transform: InvertibleTransform) -> bool:
    if isinstance(transform, Compose):
        return any(isinstance(t, MapTransform) for t in transform.flatten().transforms)
    return isinstance(transform, MapTransform)


class PseudoLabelWriter:
    """Write each item's hard label and confidence map with its source image's geometry, for review (MONAI Label).

    The probabilities of the preprocessed image are moved back to the source geometry (``invert_transform``, the
    loader's preprocessing, inverted with MONAI's ``Invertd``/``inverse``, linear interpolation) before the hard
    label is taken, and ``SaveImage`` writes the files with the source's affine (NIfTI) or size (PNG).

    Args:
        activation: ``"sigmoid"`` or ``"softmax"``: how the probabilities were made.
        image_key: image key of a batch.
        invert_transform: the loader's preprocessing; needed when the images went through spatial transforms.
        ext: extension of the written files; the source file's when None.
    """

    def __init__(
        self,
        activation: str,
        image_key: str = "image",
        invert_transform: InvertibleTransform | None = None,
        ext: str | None = None,
    ) -> None:
        self.activation = activation
        self.image_key = image_key
        self.invert_transform = invert_transform
        self.ext = ext

    def _invert(self, probs: torch.Tensor, image: MetaTensor) -> MetaTensor:
        """``probs`` ``[C, *spatial]`` of the preprocessed ``image``, moved back to the source geometry."""
        pred = MetaTensor(probs)
        pred.meta = deepcopy(image.meta)
        if not image.applied_operations:
            return pred
        transform = self.invert_transform
        if transform is None:
            raise ValueError(
                f"{image.meta.get('filename_or_obj', 'the image')} went through spatial transforms "
                f"({[op.get('class') for op in image.applied_operations]}) but no invert_transform was given, "
                f"and the loader's dataset has no invertible `transform`"
            )
        if _is_dict_transform(transform):
            inverter = Invertd(keys=_PRED, transform=transform, orig_keys=self.image_key, nearest_interp=False)
            return inverter({self.image_key: image, _PRED: pred})[_PRED]
        pred.applied_operations = deepcopy(image.applied_operations)
        return transform.inverse(pred)

    def write(
        self,
        data_loader: Iterable[dict],
        predict: Callable[[torch.Tensor], torch.Tensor],
        write_dir: str,
        ext: str | None = None,
    ) -> list[str]:
        """Run ``predict`` (images -> probabilities ``B[C, *spatial]``) over the loader and write each item's pseudo
        label and confidence map.

        For each item, ``<write_dir>/<stem>_pseudo<ext>`` (the hard label, ``uint8``, :func:`s4mi.losses.targets.hard_labels`) and
        ``<write_dir>/<stem>_confidence<ext>`` (:func:`s4mi.losses.targets.confidence`; ``float32`` in NIfTI, ``uint8`` 0..255
        in PNG), where ``<stem>`` is the source file's name (``meta["filename_or_obj"]``) without extension. The
        probabilities are moved back to the source geometry (the inverse of the loader's spatial transforms,
        with linear interpolation) before thresholding, and the files are written with the source's affine
        (NIfTI) or size (PNG).

        Args:
            data_loader: dict batches whose ``image_key`` is a ``MetaTensor`` with the source file's metadata.
            predict: the teacher's probabilities of a batch of images.
            write_dir: output folder (made if missing).
            ext: extension such as ``".nii.gz"`` or ``".png"``; the source file's when None.

        Returns:
            the written paths, label then confidence for each item.
        """
        paths: list[str] = []
        savers: dict[tuple[str, str], SaveImage] = {}

        def saver(kind: str, out_ext: str) -> SaveImage:
            if (kind, out_ext) not in savers:
                png = out_ext.lower() == ".png"
                dtype = np.uint8 if kind == "pseudo" or png else np.float32
                savers[kind, out_ext] = SaveImage(
                    output_dir=write_dir,
                    output_postfix=kind,
                    output_ext=out_ext,
                    output_dtype=dtype,
                    resample=False,
                    separate_folder=False,
                    print_log=False,
                    scale=255 if png and kind == "confidence" else None,
                    savepath_in_metadict=True,
                )
            return savers[kind, out_ext]

        os.makedirs(write_dir, exist_ok=True)
        for batch in data_loader:
            images = batch[self.image_key]
            if not isinstance(images, MetaTensor):
                raise TypeError(f"batch[{self.image_key!r}] must be a MetaTensor (with the source file's metadata)")
            probs = predict(images).cpu()
            for prob, image in zip(probs, decollate_batch(images, detach=True), strict=True):
                source = str(image.meta.get("filename_or_obj", ""))
                if not source:
                    raise ValueError("the image has no meta['filename_or_obj'] to name the written files")
                out_ext = ext or self.ext or _source_ext(source)
                pred = self._invert(prob, image)
                p = pred.as_tensor()[None]
                for kind, values in (
                    ("pseudo", hard_labels(p, self.activation)[0].to(torch.uint8)),
                    ("confidence", confidence(p, self.activation)[0]),
                ):
                    out = MetaTensor(values, meta=deepcopy(pred.meta))
                    saver(kind, out_ext)(out)
                    paths.append(str(out.meta["saved_to"]))
        logger.info(f"wrote {len(paths) // 2} pseudo labels and confidence maps to {write_dir}")
        return paths
