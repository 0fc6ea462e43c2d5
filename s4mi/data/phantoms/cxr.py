"""Chest radiographs: 8-bit grayscale PNG or DICOM, six multi-label findings and a lung mask."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._common import (
    Array,
    _blob,
    _grid,
    _noise,
    _pick,
    _png_bytes,
    _ridges,
    _soft,
    _to_uint8,
    _write_atomic,
)

CXR_CLASSES: tuple[str, ...] = ("nodule", "mass", "effusion", "cardiomegaly", "pneumothorax", "consolidation")

#: Per-finding prevalence of the chest radiographs (cardiomegaly also raises the odds of effusion).
CXR_PREVALENCE: tuple[float, ...] = (0.12, 0.06, 0.10, 0.10, 0.06, 0.12)

_DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _cxr_labels(rng: np.random.Generator) -> Array:
    u = rng.random(len(CXR_CLASSES) + 1)
    labels = (u[:-1] < np.asarray(CXR_PREVALENCE)).astype(np.int64)
    if labels[3] and not labels[2] and u[-1] < 0.15:  # heart failure: cardiomegaly with effusion
        labels[2] = 1
    return labels


def generate_cxr(
    rng: np.random.Generator, size: int = 128, labels: Sequence[int] | None = None
) -> tuple[Array, Array, Array]:
    """Draw one frontal (PA) chest radiograph.

    The image is rendered from an attenuation map (body, lungs, heart, mediastinum, spine, ribs, clavicles, vessels,
    breast shadows) through a random exposure, gamma and quantum noise. Findings exist only because they are drawn:
    nodule (small faint round opacity), mass (larger lobulated opacity), effusion (basal opacity with a meniscus
    blunting the costophrenic angle), cardiomegaly (cardio-thoracic ratio above 0.5), pneumothorax (peripheral rim
    without lung markings bounded by a visceral pleural line) and consolidation (patchy airspace opacity).

    Args:
        rng: random generator; the only source of randomness.
        size: height and width in pixels.
        labels: optional multi-hot findings to draw (``CXR_CLASSES`` order); sampled with ``CXR_PREVALENCE`` if None.

    Returns:
        ``(image, labels, lung_mask)``: uint8 image (H, W), int64 multi-hot labels (6,), uint8 lung mask (H, W) in
        {0, 1} (both lung fields, heart and mediastinum excluded).
    """
    lab = _cxr_labels(rng) if labels is None else np.asarray(labels, dtype=np.int64).copy()
    if lab.shape != (len(CXR_CLASSES),):
        raise ValueError(f"labels must have length {len(CXR_CLASSES)}, got shape {lab.shape}")
    # findings get their own stream, so the same rng state gives the same patient with or without them
    frng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    s = size
    px = 2.0 / s
    yy0, xx0 = _grid(s)

    # patient positioning: the anatomy lives in canonical coordinates, the grid is mapped into them
    ang = math.radians(float(np.clip(rng.normal(0.0, 2.5), -7, 7)))
    scale = rng.uniform(0.9, 1.06)
    ty, tx = rng.normal(0.0, 0.03, 2)
    ca, sa = math.cos(ang), math.sin(ang)
    xx = (ca * (xx0 - tx) + sa * (yy0 - ty)) / scale
    yy = (-sa * (xx0 - tx) + ca * (yy0 - ty)) / scale
    eps = px / scale

    # --- anatomy parameters ------------------------------------------------------------------------------------------
    bx = rng.uniform(0.86, 1.02)
    mw = rng.uniform(0.08, 0.12)  # half-width of the mediastinum
    apex = rng.uniform(-0.8, -0.66)
    base_r = rng.uniform(0.4, 0.56)
    lungs = []
    for sign, base in ((-1.0, base_r), (1.0, base_r + rng.uniform(0.0, 0.08))):
        lungs.append(
            {
                "sign": sign,
                "cx": sign * rng.uniform(0.36, 0.42),
                "ax": rng.uniform(0.26, 0.31),
                "apex": apex + rng.uniform(-0.03, 0.03),
                "base": base,
                "dome": rng.uniform(0.08, 0.17),
            }
        )

    def lung_f(x: Array, y: Array, p: dict[str, float]) -> Array:
        cy = p["apex"] + 0.55 * (p["base"] - p["apex"])
        ay = cy - p["apex"]
        ax_low = p["ax"] * (1.0 + 0.1 * np.clip((y - cy) / (p["base"] - cy), 0, 1))
        u = (x - p["cx"]) / np.where(y < cy, p["ax"], ax_low)
        upper = (np.sqrt(u**2 + ((y - cy) / ay) ** 2) - 1.0) * min(p["ax"], ay)
        dome = p["base"] - p["dome"] * (1.0 - np.clip(u, -1, 1) ** 2)
        lower = np.maximum((np.abs(u) - 1.0) * p["ax"], y - dome)
        f = np.where(y < cy, upper, lower)
        return np.maximum(f, mw - p["sign"] * x)

    f_lungs = [lung_f(xx, yy, p) for p in lungs]
    thorax_w = (abs(lungs[0]["cx"]) + lungs[0]["ax"] * 1.1) + (lungs[1]["cx"] + lungs[1]["ax"] * 1.1)
    u_ctr = rng.random()
    ctr = 0.505 + 0.075 * u_ctr if lab[3] else 0.42 + 0.075 * u_ctr
    w_h = ctr * thorax_w
    hb = rng.uniform(0.2, 0.25) * (1.0 + 0.6 * (ctr - 0.45))
    hy = lungs[1]["base"] - lungs[1]["dome"] - 0.75 * hb + rng.uniform(-0.03, 0.03)
    hx = w_h * rng.uniform(0.12, 0.17)
    y_h = np.where(yy > hy, hy + 0.35 * (yy - hy), yy)  # the heart rests on the diaphragm
    f_heart = _blob(y_h, xx, hy, hx, w_h / 2.0, rng, 0.0, aspect=(w_h / 2.0) / hb, angle=math.radians(-8))
    f_heart = f_heart * (hb / (w_h / 2.0)) ** 0.5
    f_med = np.maximum(np.abs(xx - 0.02) - mw - 0.01, yy - hy)
    f_aorta = np.hypot(xx - (mw + 0.015), yy - (hy - hb - rng.uniform(0.06, 0.12))) - rng.uniform(0.045, 0.065)

    lung_soft = np.clip(_soft(f_lungs[0], eps) + _soft(f_lungs[1], eps), 0, 1)
    heart_soft = _soft(f_heart, 1.5 * eps)
    med_soft = np.maximum(_soft(f_med, 1.5 * eps), _soft(f_aorta, 1.5 * eps))
    lung_mask = (np.minimum(f_lungs[0], f_lungs[1]) < 0) & (f_heart > 0) & (f_med > 0) & (f_aorta > 0)
    interior = (np.minimum(f_lungs[0], f_lungs[1]) < -0.05) & (f_heart > 0.03) & (f_med > 0.03)

    # air content of the lung fields; findings below remove air (opacities) or add it (pneumothorax)
    depth = rng.uniform(0.26, 0.34)
    core = np.clip(-np.minimum(f_lungs[0], f_lungs[1]) / 0.15, 0, 1)
    air = lung_soft * (1.0 - 0.85 * heart_soft) * (1.0 - med_soft) * (0.72 + 0.28 * core)
    markings = np.ones_like(xx)
    density = np.zeros_like(xx)

    # --- findings ----------------------------------------------------------------------------------------------------
    if lab[0]:  # nodule(s)
        for _ in range(1 if frng.random() < 0.75 else int(frng.integers(2, 4))):
            iy, ix = _pick(frng, interior)
            r = frng.uniform(0.05, 0.09)
            d = np.hypot(xx - xx[iy, ix], yy - yy[iy, ix])
            density += frng.uniform(0.08, 0.15) * _soft(d - r, 0.3 * r)
    if lab[1]:  # mass
        iy, ix = _pick(frng, interior)
        r = frng.uniform(0.11, 0.2)
        f = _blob(yy, xx, yy[iy, ix], xx[iy, ix], r, frng, irregularity=0.12, aspect=frng.uniform(0.8, 1.25))
        density += frng.uniform(0.1, 0.18) * _soft(f, 0.25 * r) * lung_soft
    if lab[2]:  # pleural effusion, one side or both
        sides = [int(frng.integers(2))] if frng.random() < 0.65 else [0, 1]
        for k in sides:
            p = lungs[k]
            h = frng.uniform(0.06, 0.26) * (p["base"] - p["apex"])
            lateral = np.clip(p["sign"] * (xx - p["cx"]) / p["ax"], -1, 1.2)
            surface = p["base"] - h - 0.5 * h * (lateral + 1.0) ** 2 / 2.0
            fluid = _soft(surface - yy, 0.04) * _soft(f_lungs[k], eps)
            air = air * (1.0 - frng.uniform(0.55, 0.9) * fluid)
    if lab[4]:  # pneumothorax: the lung retracts towards the hilum
        k = int(frng.integers(2))
        p = lungs[k]
        sh = frng.uniform(0.65, 0.85)
        pvx, pvy = p["sign"] * 0.18, p["base"] - 0.2
        f_s = lung_f(pvx + (xx - pvx) / sh, pvy + (yy - pvy) / sh, p) * sh
        rim = _soft(f_lungs[k], eps) * _soft(-f_s, 1.5 * eps)
        markings *= 1.0 - rim
        air = air + frng.uniform(0.1, 0.2) * rim
        density += frng.uniform(0.03, 0.06) * np.exp(-((f_s / (0.9 * px)) ** 2)) * _soft(f_lungs[k], eps)
    if lab[5]:  # consolidation: patchy airspace opacity
        iy, ix = _pick(frng, interior & (yy > -0.3))
        big_r = frng.uniform(0.12, 0.24)
        d = np.hypot(xx - xx[iy, ix], yy - yy[iy, ix]) / big_r
        patch = np.clip((1.0 - d + 0.45 * _noise(frng, (s, s), 0.025 * s)) * 2.5, 0, 1)
        air = air * (1.0 - frng.uniform(0.35, 0.7) * patch * lung_soft)

    # --- attenuation map ---------------------------------------------------------------------------------------------
    f_body = (np.hypot(xx / bx, (yy - 0.25) / 1.35) - 1.0) * bx
    a = 0.02 + 0.5 * _soft(f_body, 2.5 * eps)
    a += 0.1 * np.maximum(med_soft, heart_soft)
    a -= depth * air
    ax_abs = np.abs(xx)
    spine = _soft(ax_abs - rng.uniform(0.055, 0.075), 1.5 * eps)
    a += spine * (0.09 + 0.025 * np.cos(2 * math.pi * (yy - rng.uniform(0, 1)) / rng.uniform(0.15, 0.19)))

    # ribs: posterior arcs (strong) and anterior arcs (faint), warped to avoid perfect periodicity
    warp = 0.06 * _noise(rng, (s, s), 0.1 * s)
    spacing = rng.uniform(0.15, 0.19)
    thick = rng.uniform(0.3, 0.42)
    u = ax_abs
    rib_zone = _soft(u - (thorax_w / 2.0 + 0.08), 0.03) * _soft(0.03 - u, 0.02) * _soft(yy - (base_r + 0.1), 0.05)
    ph_post = (yy - (-0.12 * u + 0.75 * u**2) + warp) / spacing
    ph_ant = (yy + 0.55 * u + warp) / (spacing * 1.15)
    post = np.clip((np.cos(2 * math.pi * ph_post) - math.cos(math.pi * thick)) * 3.0, 0, 1)
    ant = np.clip((np.cos(2 * math.pi * ph_ant) - math.cos(math.pi * 0.4)) * 3.0, 0, 1)
    rib_c = rng.uniform(0.035, 0.07)
    a += rib_zone * (rib_c * post + 0.35 * rib_c * ant * (u > 0.15))

    # clavicles
    cy0 = rng.uniform(-0.72, -0.6)
    for sign in (-1.0, 1.0):
        x0, x1 = sign * 0.06, sign * rng.uniform(0.5, 0.62)
        y1 = cy0 - rng.uniform(0.06, 0.14)
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - cy0) * (y1 - cy0)) / ((x1 - x0) ** 2 + (y1 - cy0) ** 2), 0, 1)
        d = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (cy0 + t * (y1 - cy0)))
        a += rng.uniform(0.08, 0.13) * _soft(d - 0.03, 1.5 * eps)

    # lung markings: vessels radiating from the hila
    vessels = _ridges(_noise(rng, (s, s), max(0.012 * s, 0.8)), 0.35)
    hila = np.minimum(np.hypot(xx + 0.15, yy - 0.0), np.hypot(xx - 0.17, yy - 0.02))
    a += rng.uniform(0.03, 0.05) * vessels * (0.25 + np.exp(-hila / 0.3)) * lung_soft * markings
    if rng.random() < 0.4:  # breast shadows
        for sign in (-1.0, 1.0):
            f = np.hypot((xx - sign * 0.45) / 0.38, (yy - 0.42) / 0.26) - 1.0
            a += rng.uniform(0.03, 0.07) * _soft(f, 0.12)
    a += density
    a += 0.02 * _noise(rng, (s, s), 0.08 * s)
    a = ndi.gaussian_filter(a, 0.5 * s / 128.0 + 0.3)

    # --- acquisition -------------------------------------------------------------------------------------------------
    lo = rng.uniform(-0.03, 0.08)
    hi = rng.uniform(0.6, 0.78)
    img = np.clip((a - lo) / (hi - lo), 0, 1) ** rng.uniform(0.75, 1.35)
    gy, gx = rng.normal(0, 0.05, 2)
    img = img * (1.0 + gy * yy0 + gx * xx0)
    q = rng.uniform(0.012, 0.035)
    img = img + q * np.sqrt(img + 0.05) * ndi.gaussian_filter(rng.standard_normal((s, s)), 0.5) * 1.6
    if rng.random() < 0.3:  # lead marker in a top corner
        my, mx = int(s * rng.uniform(0.04, 0.12)), int(s * (rng.uniform(0.05, 0.15) if rng.random() < 0.5 else 0.85))
        h, w = max(2, s // 24), max(2, s // 32)
        img[my : my + h, mx : mx + w] = 0.97
    return _to_uint8(img), lab, lung_mask.astype(np.uint8)


def _dicom_bytes(image: Array, seed: int, idx: int, pixel_spacing: float) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    def uid(kind: str) -> UID:
        return generate_uid(entropy_srcs=["s4mi-phantom-cxr", str(seed), str(idx), str(image.shape), kind])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_DX_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UID(_DX_FOR_PRESENTATION)
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName = f"Phantom^CXR{idx:05d}"
    ds.PatientID = f"S4MI-CXR-{seed}-{idx:05d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.Manufacturer = "s4mi phantom"
    ds.SeriesNumber = 1
    ds.InstanceNumber = idx + 1
    ds.PatientOrientation = ["L", "F"]
    # not part of the DX IOD, but lets readers such as MONAI's PydicomReader build an affine with the right spacing
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImagerPixelSpacing = [pixel_spacing, pixel_spacing]
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _write_cxr(
    root: Path, i: int, rng: np.random.Generator, size: int, seed: int, dicom: bool
) -> tuple[dict[str, Any], int]:
    image, labels, lung = generate_cxr(rng, size)
    stem = f"cxr_{i:05d}"
    if dicom:
        rel = f"images/{stem}.dcm"
        _write_atomic(root / rel, _dicom_bytes(image, seed, i, pixel_spacing=round(384.0 / size, 4)))
    else:
        rel = f"images/{stem}.png"
        _write_atomic(root / rel, _png_bytes(image))
    _write_atomic(root / f"masks/{stem}.png", _png_bytes(lung))
    return {"image": rel, "label": [int(v) for v in labels], "mask": f"masks/{stem}.png"}, 0
