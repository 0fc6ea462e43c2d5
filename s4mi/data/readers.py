"""Image loading for s4mi datalists on top of MONAI's readers.

MONAI's :class:`~monai.transforms.LoadImaged` already reads what s4mi datalists point at: PNG / JPEG (PIL),
single DICOM files and DICOM series folders (pydicom) and NIfTI (nibabel). The one gap is an ``"image"`` given as
a list of DICOM slice files: MONAI stacks a list of files as channels and fails for slices at different positions.
:class:`DicomSeriesReader` reads such a list as one series, and :func:`image_loader` registers it in front of
MONAI's defaults so it claims only that case.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import PydicomReader
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

__all__ = ["DICOM_SUFFIXES", "DicomSeriesReader", "is_dicom_file", "image_loader"]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")


def is_dicom_file(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM file: a DICOM suffix, or no suffix and a DICOM preamble (``DICM``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    return suffix == "" and p.is_file() and pydicom.misc.is_dicom(os.fspath(p))


class DicomSeriesReader(PydicomReader):
    """A :class:`~monai.data.PydicomReader` that reads a list of DICOM files of one series as one volume.

    Slices are ordered by ``InstanceNumber`` and stacked along the last spatial axis, exactly as PydicomReader
    does for a series folder. Files from different series (different ``SeriesInstanceUID``) keep MONAI's meaning of
    a list, one channel per file; a single file or a folder is read as by PydicomReader.

    Takes the same arguments as :class:`~monai.data.PydicomReader`.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Claims only lists of two or more DICOM files, leaving everything else to MONAI's default readers."""
        names = ensure_tuple(filename)
        return len(names) > 1 and all(is_dicom_file(n) for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Reads the files; a list of files of one series is returned as one series for :meth:`get_data`."""
        names = [os.fspath(n) for n in ensure_tuple(data)]
        if len(names) < 2 or not all(Path(n).is_file() for n in names):
            return super().read(data, **kwargs)
        slices = [pydicom.dcmread(n, **{**self.kwargs, **kwargs}) for n in names]
        series = {getattr(s, "SeriesInstanceUID", None) for s in slices}
        self.has_series = len(series) == 1
        # a one-element list of names is how PydicomReader marks a folder series for get_data
        self.filenames = [names] if self.has_series else names  # type: ignore[list-item]
        return slices


def image_loader(
    keys: KeysCollection,
    reader: type[ImageReader] | str | None = None,
    image_only: bool = True,
    ensure_channel_first: bool = True,
    dtype: DtypeLike = np.float32,
    allow_missing_keys: bool = False,
    **kwargs: Any,
) -> LoadImaged:
    """A :class:`~monai.transforms.LoadImaged` for s4mi datalist items.

    With ``reader=None`` MONAI picks the reader by suffix (PIL for PNG / JPEG, nibabel for NIfTI, pydicom for DICOM
    files and folders), and a :class:`DicomSeriesReader` is registered first so that a list of DICOM slice files
    is read as one volume. Note MONAI's 2D convention: a PNG of ``H x W`` pixels loads as ``W x H``.

    Args:
        keys: item keys to load, e.g. ``"image"`` or ``("image", "label")``.
        reader: a fixed reader (name or class) instead of the automatic choice.
        image_only: return MetaTensors only (metadata stays on ``.meta``), without ``*_meta_dict`` keys.
        ensure_channel_first: move or add the channel axis first (``(C, *spatial)``).
        dtype: output data type.
        allow_missing_keys: do not fail on items that lack one of ``keys`` (e.g. unlabelled items).
        kwargs: passed on to :class:`~monai.transforms.LoadImaged` and its readers.

    Returns:
        The configured loader.
    """
    loader = LoadImaged(
        keys,
        reader=reader,
        image_only=image_only,
        ensure_channel_first=ensure_channel_first,
        dtype=dtype,
        allow_missing_keys=allow_missing_keys,
        **kwargs,
    )
    if reader is None:
        loader.register(DicomSeriesReader())
    return loader
