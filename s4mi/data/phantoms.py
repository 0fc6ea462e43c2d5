"""Seeded generators of realistic synthetic medical-imaging datasets (the embedded default data of s4mi).

No labelled medical dataset can be downloaded in the environments s4mi targets, so every bundle trains on phantoms
written to disk in the formats real data comes in (PNG, DICOM, NIfTI) together with a MONAI-style ``datalist.json``.

Four phantoms are available:

* ``"cxr"``: chest radiographs (8-bit grayscale PNG or DICOM), six multi-label findings and a lung mask.
* ``"skin"``: dermoscopy photographs (RGB PNG), the seven ISIC 2018 task 3 classes and a lesion mask.
* ``"polyp"``: colonoscopy frames (RGB PNG) with a binary polyp mask.
* ``"ct3d"``: abdominal CT volumes in Hounsfield units (NIfTI) with a multi-class organ label map.

Findings are subtle on purpose (small, low-contrast, overlapping anatomy, noise, exposure variation) so that label
efficiency matters: a supervised CNN trained on 10% of the labels is clearly worse than one trained on all of them.

Every image is drawn from its own generator seeded by ``(seed, index, phantom)``, so image ``i`` does not depend on
``n`` and the same arguments always produce byte-identical files.

Example:
    >>> from s4mi.data.phantoms import make_phantom
    >>> datalist = make_phantom("cxr", "/tmp/cxr", n=200, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "CT3D_CLASSES",
    "CXR_CLASSES",
    "PHANTOMS",
    "POLYP_CLASSES",
    "SKIN_CLASSES",
    "SKIN_PRIORS",
    "generate_ct3d",
    "generate_cxr",
    "generate_polyp",
    "generate_skin",
    "make_phantom",
    "nifti_affine",
]

PHANTOMS: tuple[str, ...] = ("cxr", "skin", "polyp", "ct3d")
CXR_CLASSES: tuple[str, ...] = ("nodule", "mass", "effusion", "cardiomegaly", "pneumothorax", "consolidation")
SKIN_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
POLYP_CLASSES: tuple[str, ...] = ("background", "polyp")
CT3D_CLASSES: tuple[str, ...] = ("background", "liver", "spleen", "left_kidney", "right_kidney")

#: ISIC 2018 task 3 training-set class frequencies, in ``SKIN_CLASSES`` order.
SKIN_PRIORS: tuple[float, ...] = (0.111, 0.670, 0.051, 0.033, 0.110, 0.011, 0.014)

#: Per-finding prevalence of the chest radiographs (cardiomegaly also raises the odds of effusion).
CXR_PREVALENCE: tuple[float, ...] = (0.12, 0.06, 0.10, 0.10, 0.06, 0.12)

DEFAULT_SIZES: dict[str, int] = {"cxr": 128, "skin": 128, "polyp": 128, "ct3d": 64}
CT3D_SPACING: tuple[float, float, float] = (1.5, 1.5, 2.5)  # x, y, z in mm

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation

Array = np.ndarray


# ----------------------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------------------


def _name_code(name: str) -> int:
    return zlib.crc32(f"s4mi-phantom-{name}".encode())


def _grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates in [-1, 1] (y down, x right), each of shape (size, size)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _soft(f: Array, eps: float) -> Array:
    """Anti-aliased indicator of the implicit region ``f < 0`` with an edge of width ~``eps``."""
    return 0.5 * (1.0 - np.tanh(f / eps))


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | Sequence[float]) -> Array:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap", truncate=3.0)
    return n / (n.std() + 1e-12)


def _coarse_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> Array:
    """Smooth noise with ~``cells`` independent values per axis, upsampled separably (much faster than zoom)."""
    out = rng.standard_normal((cells,) * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        pos = (np.arange(n, dtype=np.float32) + 0.5) / n * cells - 0.5
        d = pos[:, None] - np.arange(cells, dtype=np.float32)[None, :]
        d = (d + cells / 2.0) % cells - cells / 2.0  # periodic, so borders look like the interior
        w = np.exp(-0.5 * (d / 0.6) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out / (out.std() + 1e-6)


def _ridges(field: Array, width: float) -> Array:
    """Thin curvilinear lines along the zero crossings of a smooth random field (vessels, networks, hair)."""
    return np.exp(-((field / width) ** 2))


def _blob(
    yy: Array,
    xx: Array,
    cy: float,
    cx: float,
    radius: float,
    rng: np.random.Generator,
    irregularity: float = 0.0,
    aspect: float = 1.0,
    angle: float = 0.0,
    harmonics: int = 5,
) -> Array:
    """Approximate signed distance (negative inside) to a star-shaped blob with a harmonic-perturbed border."""
    dy, dx = yy - cy, xx - cx
    ca, sa = math.cos(angle), math.sin(angle)
    u = (ca * dx + sa * dy) / math.sqrt(aspect)
    v = (-sa * dx + ca * dy) * math.sqrt(aspect)
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    r = np.ones_like(rho)
    if irregularity > 0:
        for k in range(1, harmonics + 1):
            amp = irregularity * rng.uniform(0.3, 1.0) / k**0.8
            r = r + amp * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    r = np.maximum(r, 0.35) * radius
    return (rho - r) * (r / radius)


def _gaussian_spots(shape: tuple[int, int], ys: Array, xs: Array, amps: Array, sigma: float) -> Array:
    """Sum of isotropic Gaussian spots (peak ~``amps``) at integer-rounded pixel positions."""
    img = np.zeros(shape)
    iy = np.clip(np.rint(ys).astype(int), 0, shape[0] - 1)
    ix = np.clip(np.rint(xs).astype(int), 0, shape[1] - 1)
    np.add.at(img, (iy, ix), amps)
    if sigma > 0:
        img = ndi.gaussian_filter(img, sigma, mode="constant", truncate=3.0) * (2 * math.pi * sigma**2)
    return img


def _to_uint8(x: Array) -> Array:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _pick(rng: np.random.Generator, mask: Array) -> tuple[int, int]:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        idx = np.arange(mask.size)
    flat = int(idx[rng.integers(idx.size)])
    return divmod(flat, mask.shape[1])


# ----------------------------------------------------------------------------------------------------------------------
# chest radiograph
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# dermoscopy
# ----------------------------------------------------------------------------------------------------------------------

_PIGMENT = {
    "tan": (196, 148, 104),
    "light_brown": (170, 114, 74),
    "brown": (128, 78, 48),
    "dark_brown": (84, 50, 34),
    "black": (42, 32, 34),
    "blue_grey": (104, 112, 134),
    "pink": (214, 136, 134),
    "red": (184, 62, 66),
    "purple": (118, 52, 88),
    "white": (236, 222, 214),
    "yellow": (214, 190, 128),
}


def _col(name: str) -> Array:
    return np.asarray(_PIGMENT[name], dtype=np.float64) / 255.0


def _mix(rng: np.random.Generator, a: str, b: str) -> Array:
    t = rng.uniform(0, 1)
    return (1 - t) * _col(a) + t * _col(b)


def _skin_class_params(rng: np.random.Generator, cls: int) -> dict[str, Any]:
    """Class-conditional appearance with deliberately overlapping ranges (atypical naevi, featureless melanomas)."""
    name = SKIN_CLASSES[cls]
    p: dict[str, Any] = {
        "radius": rng.uniform(0.25, 0.5),
        "irregularity": rng.uniform(0.02, 0.1),
        "aspect": rng.uniform(0.75, 1.33),
        "fuzz": rng.uniform(0.01, 0.04),
        "opacity": rng.uniform(0.7, 0.95),
        "base": _mix(rng, "light_brown", "brown"),
        "second": None,  # (colour, coverage) of a variegated second colour
        "third": None,
        "network": 0.0,
        "network_scale": rng.uniform(0.02, 0.035),
        "dots": 0,
        "dot_colour": _col("dark_brown"),
        "dots_peripheral": False,
        "white_spots": 0,
        "vessels": 0.0,
        "lacunae": 0,
        "scale": 0.0,
        "scar": 0.0,
        "ulcer": 0.0,
        "nests": 0,
        "centre_dark": rng.uniform(0.0, 0.2),
    }
    atypical = rng.random()
    if name == "NV":
        p["radius"] = rng.uniform(0.2, 0.48)
        p["base"] = _mix(rng, "tan", "brown") if rng.random() < 0.8 else _mix(rng, "brown", "dark_brown")
        p["network"] = rng.uniform(0.0, 0.5)
        p["dots"] = int(rng.integers(0, 25)) if rng.random() < 0.4 else 0
        if atypical < 0.3:  # dysplastic naevus: looks somewhat like a melanoma
            p["irregularity"] = rng.uniform(0.08, 0.22)
            p["second"] = (_mix(rng, "brown", "dark_brown"), rng.uniform(0.1, 0.4))
            p["dots_peripheral"] = rng.random() < 0.5
            p["dots"] = int(rng.integers(0, 30))
        if rng.random() < 0.1:  # dermal naevus: skin-coloured to pink, comma vessels
            p["base"] = _mix(rng, "pink", "tan")
            p["opacity"] = rng.uniform(0.4, 0.7)
            p["vessels"] = rng.uniform(0.0, 0.3)
            p["network"] = 0.0
        if rng.random() < 0.12:  # papillomatous naevus with milia-like cysts
            p["white_spots"] = int(rng.integers(1, 8))
        if rng.random() < 0.12:  # blue naevus
            p["base"] = _mix(rng, "blue_grey", "dark_brown")
            p["network"] = 0.0
    elif name == "MEL":
        p["radius"] = rng.uniform(0.28, 0.62)
        p["irregularity"] = rng.uniform(0.1, 0.28) if atypical > 0.35 else rng.uniform(0.04, 0.14)
        p["aspect"] = rng.uniform(0.6, 1.6)
        p["base"] = _mix(rng, "light_brown", "dark_brown")
        p["fuzz"] = rng.uniform(0.01, 0.07)
        if atypical > 0.35:
            p["second"] = (_mix(rng, "black", "dark_brown"), rng.uniform(0.2, 0.45))
            if rng.random() < 0.6:
                p["third"] = (_col(["blue_grey", "red", "white"][int(rng.integers(3))]), rng.uniform(0.1, 0.3))
        p["network"] = rng.uniform(0.2, 0.8)
        p["network_scale"] = rng.uniform(0.025, 0.05)
        p["dots"] = int(rng.integers(0, 40))
        p["dot_colour"] = _mix(rng, "black", "dark_brown")
        p["dots_peripheral"] = rng.random() < 0.5
        if rng.random() < 0.1:  # amelanotic melanoma
            p["base"] = _mix(rng, "pink", "light_brown")
            p["second"] = None
            p["vessels"] = rng.uniform(0.1, 0.4)
            p["dots"] = 0
    elif name == "BKL":
        p["radius"] = rng.uniform(0.25, 0.55)
        p["irregularity"] = rng.uniform(0.04, 0.16)
        p["base"] = _mix(rng, "tan", "light_brown") if rng.random() < 0.65 else _mix(rng, "brown", "dark_brown")
        p["irregularity"] = rng.uniform(0.04, 0.22)
        p["fuzz"] = rng.uniform(0.008, 0.04)
        p["opacity"] = rng.uniform(0.6, 0.9)
        p["white_spots"] = int(rng.integers(0, 14))
        p["dots"] = int(rng.integers(0, 14))
        p["scale"] = rng.uniform(0.0, 0.35)
        if rng.random() < 0.3:
            p["second"] = (_mix(rng, "yellow", "tan"), rng.uniform(0.15, 0.4))
        if rng.random() < 0.1:  # lichen-planus-like keratosis: pink-grey
            p["base"] = _mix(rng, "pink", "blue_grey")
    elif name == "BCC":
        p["radius"] = rng.uniform(0.22, 0.5)
        p["irregularity"] = rng.uniform(0.05, 0.18)
        pigmented = rng.random() < 0.3
        p["base"] = _mix(rng, "pink", "white") if not pigmented else _mix(rng, "light_brown", "brown")
        p["opacity"] = rng.uniform(0.45, 0.8)
        p["fuzz"] = rng.uniform(0.02, 0.06)
        p["vessels"] = rng.uniform(0.1, 0.7) if rng.random() < 0.75 else 0.0
        p["nests"] = int(rng.integers(0, 6)) + (int(rng.integers(2, 6)) if pigmented else 0)
        p["ulcer"] = rng.uniform(0.0, 1.0) if rng.random() < 0.3 else 0.0
    elif name == "AKIEC":
        p["radius"] = rng.uniform(0.25, 0.55)
        p["irregularity"] = rng.uniform(0.05, 0.2)
        p["base"] = _mix(rng, "pink", "red") if rng.random() < 0.7 else _mix(rng, "pink", "light_brown")
        p["opacity"] = rng.uniform(0.4, 0.75)
        p["fuzz"] = rng.uniform(0.04, 0.1)
        p["scale"] = rng.uniform(0.2, 0.7)
        p["dots"] = int(rng.integers(0, 30))
        p["dot_colour"] = _col("red")
        if rng.random() < 0.3:
            p["vessels"] = rng.uniform(0.1, 0.4)
    elif name == "DF":
        p["radius"] = rng.uniform(0.2, 0.38)
        p["base"] = _mix(rng, "light_brown", "brown")
        p["opacity"] = rng.uniform(0.6, 0.9)
        p["fuzz"] = rng.uniform(0.04, 0.09)
        p["network"] = rng.uniform(0.3, 0.7)
        p["scar"] = rng.uniform(0.3, 0.9)
    elif name == "VASC":
        p["radius"] = rng.uniform(0.15, 0.38)
        p["irregularity"] = rng.uniform(0.02, 0.12)
        p["base"] = _mix(rng, "red", "purple") if rng.random() < 0.75 else _mix(rng, "purple", "dark_brown")
        p["opacity"] = rng.uniform(0.6, 0.95)
        p["fuzz"] = rng.uniform(0.008, 0.02)
        p["lacunae"] = int(rng.integers(0, 25))
    return p


def generate_skin(rng: np.random.Generator, size: int = 128, label: int | None = None) -> tuple[Array, int, Array]:
    """Draw one dermoscopy image.

    The lesion's shape (round vs irregular), colours (tan/brown, black, blue-grey, pink/red, purple), structures
    (pigment network, dots/globules, milia-like cysts, arborising vessels, scale, lacunae, central scar) and border
    (sharp vs fuzzy) depend on the class with overlapping distributions; the background has skin texture, hair,
    vignetting, a dermatoscope ring and gel bubbles.

    Args:
        rng: random generator; the only source of randomness.
        size: height and width in pixels.
        label: class index in ``SKIN_CLASSES``; sampled from ``SKIN_PRIORS`` if None.

    Returns:
        ``(image, label, lesion_mask)``: uint8 RGB image (H, W, 3), class index, uint8 mask (H, W) in {0, 1}.
    """
    cls = int(rng.choice(len(SKIN_CLASSES), p=np.asarray(SKIN_PRIORS) / sum(SKIN_PRIORS))) if label is None else label
    if not 0 <= cls < len(SKIN_CLASSES):
        raise ValueError(f"label must be in [0, {len(SKIN_CLASSES)}), got {cls}")
    s = size
    yy, xx = _grid(s)
    px = 2.0 / s

    # --- skin ---------------------------------------------------------------------------------------------------------
    tone = rng.beta(1.6, 3.5)
    skin = (1 - tone) * np.array([0.93, 0.78, 0.7]) + tone * np.array([0.6, 0.4, 0.3])
    skin = skin * rng.uniform(0.94, 1.04, 3)
    img = np.broadcast_to(skin, (s, s, 3)).copy()
    img *= 1.0 + 0.035 * _noise(rng, (s, s), 0.12 * s)[..., None] * np.array([1.0, 1.3, 1.3])
    img[..., 0] += 0.02 * _noise(rng, (s, s), 0.05 * s)  # erythema
    lines = _ridges(_noise(rng, (s, s), (0.6, 3.0)), 0.3) + _ridges(_noise(rng, (s, s), (3.0, 0.6)), 0.3)
    img *= 1.0 - 0.03 * lines[..., None]

    # --- lesion -------------------------------------------------------------------------------------------------------
    p = _skin_class_params(rng, cls)
    cy, cx = rng.normal(0.0, 0.1, 2)
    r0 = p["radius"] * rng.uniform(1.1, 1.5)
    f = _blob(yy, xx, cy, cx, r0, rng, p["irregularity"], p["aspect"], rng.uniform(0, math.pi), harmonics=6)
    f = f + p["irregularity"] * 0.25 * r0 * _noise(rng, (s, s), 0.03 * s)  # ragged border on irregular lesions
    inside = _soft(f, max(p["fuzz"], px))
    depth = np.clip(-f / r0, 0, 1)
    colour = np.broadcast_to(p["base"], (s, s, 3)).copy()
    colour *= (1.0 - p["centre_dark"] * depth)[..., None]
    colour *= 1.0 + rng.uniform(0.05, 0.15) * _noise(rng, (s, s), 0.04 * s)[..., None]
    for key in ("second", "third"):
        if p[key] is not None:
            c2, cover = p[key]
            field = _noise(rng, (s, s), 0.08 * s)
            region = _soft(np.quantile(field, 1 - cover) - field, 0.3) * _soft(f + 0.15 * r0, 0.05)
            colour = colour * (1 - region[..., None]) + c2 * region[..., None]
    if p["scar"] > 0:
        scar = _soft(np.hypot(yy - cy, xx - cx) - 0.45 * r0 * (1 + 0.3 * _noise(rng, (s, s), 0.05 * s)), 0.05)
        colour = colour * (1 - p["scar"] * scar[..., None]) + p["scar"] * scar[..., None] * _col("white")
    alpha = p["opacity"] * inside
    if p["network"] > 0:
        net = _ridges(_noise(rng, (s, s), p["network_scale"] * s * 0.5), 0.45)
        colour *= 1.0 - 0.35 * p["network"] * net[..., None] * depth[..., None] ** 0.3
    img = img * (1 - alpha[..., None]) + colour * alpha[..., None]

    # structures drawn on top of the pigment
    if p["dots"] > 0:
        ang = rng.uniform(0, 2 * math.pi, p["dots"])
        rad = rng.uniform(0.55, 0.95, p["dots"]) if p["dots_peripheral"] else np.sqrt(rng.uniform(0, 0.8, p["dots"]))
        ys = (cy + r0 * rad * np.sin(ang) + 1) / px - 0.5
        xs = (cx + r0 * rad * np.cos(ang) + 1) / px - 0.5
        spots = np.clip(_gaussian_spots((s, s), ys, xs, rng.uniform(0.5, 1.0, p["dots"]), 0.9 * s / 128), 0, 1)
        spots *= inside
        img = img * (1 - spots[..., None]) + p["dot_colour"] * spots[..., None]
    if p["white_spots"] > 0:
        k = p["white_spots"]
        ang, rad = rng.uniform(0, 2 * math.pi, k), np.sqrt(rng.uniform(0, 0.7, k))
        ys = (cy + r0 * rad * np.sin(ang) + 1) / px - 0.5
        xs = (cx + r0 * rad * np.cos(ang) + 1) / px - 0.5
        spots = np.clip(_gaussian_spots((s, s), ys, xs, rng.uniform(0.4, 0.9, k), 0.8 * s / 128), 0, 1) * inside
        img = img * (1 - spots[..., None]) + _col("white") * spots[..., None]
    if p["vessels"] > 0:
        ves = _ridges(_noise(rng, (s, s), 0.025 * s), 0.18) * (_noise(rng, (s, s), 0.1 * s) > -0.2)
        ves = ves * inside * p["vessels"]
        img = img * (1 - ves[..., None]) + _col("red") * ves[..., None]
    if p["nests"] > 0:
        for _ in range(p["nests"]):
            ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.7)
            fn = _blob(
                yy,
                xx,
                cy + r0 * rad * math.sin(ang),
                cx + r0 * rad * math.cos(ang),
                r0 * rng.uniform(0.1, 0.25),
                rng,
                0.1,
                rng.uniform(0.5, 2.0),
                rng.uniform(0, math.pi),
            )
            nest = 0.75 * _soft(fn, 0.02) * inside
            img = img * (1 - nest[..., None]) + _col("blue_grey") * nest[..., None]
    if p["ulcer"] > 0:
        fu = _blob(yy, xx, cy, cx, r0 * rng.uniform(0.15, 0.35), rng, 0.2)
        ul = p["ulcer"] * _soft(fu, 0.02)
        img = img * (1 - ul[..., None]) + np.array([0.45, 0.12, 0.1]) * ul[..., None]
    if p["scale"] > 0:
        sc = np.clip(_noise(rng, (s, s), 0.02 * s) - 0.6, 0, 1) * p["scale"] * inside
        img = img * (1 - sc[..., None]) + _col("white") * sc[..., None]
    if p["lacunae"] > 0:
        k = p["lacunae"]
        ang, rad = rng.uniform(0, 2 * math.pi, k), np.sqrt(rng.uniform(0, 0.75, k))
        ys = (cy + r0 * rad * np.sin(ang) + 1) / px - 0.5
        xs = (cx + r0 * rad * np.cos(ang) + 1) / px - 0.5
        lac = np.clip(_gaussian_spots((s, s), ys, xs, rng.uniform(0.6, 1.0, k), 2.2 * s / 128), 0, 1) * inside
        dark = _mix(rng, "purple", "red") * 0.75
        img = img * (1 - lac[..., None]) + dark * lac[..., None]
    mask = (f < 0).astype(np.uint8)

    # --- acquisition: hair, bubbles, illumination, dermatoscope ring, sensor noise -----------------------------------
    if rng.random() < 0.35:
        hair_col = np.array([0.12, 0.09, 0.08]) * rng.uniform(0.6, 1.6)
        for _ in range(int(rng.integers(1, 10))):
            rr = rng.uniform(0.8, 4.0)
            t = rng.uniform(0, 2 * math.pi)
            hc = rng.uniform(-1.0, 1.0, 2) - rr * np.array([math.sin(t), math.cos(t)])  # arc through a random point
            d = np.abs(np.hypot(yy - hc[0], xx - hc[1]) - rr)
            along = np.cos(np.arctan2(yy - hc[0], xx - hc[1]) - math.atan2(math.sin(t), math.cos(t)))
            span = rng.uniform(0.3, 1.2) / rr
            hair = rng.uniform(0.5, 0.9) * _soft(d - rng.uniform(0.2, 0.6) * px, 0.5 * px)
            hair *= _soft(math.cos(span) - along, 0.002)
            img = img * (1 - hair[..., None]) + hair_col * hair[..., None]
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 4))):
            by, bx, br = rng.uniform(-0.9, 0.9), rng.uniform(-0.9, 0.9), rng.uniform(0.03, 0.12)
            ring = np.exp(-(((np.hypot(yy - by, xx - bx) - br) / (0.8 * px)) ** 2))
            img = img + 0.25 * ring[..., None]
    rad = np.hypot(yy - rng.normal(0, 0.1), xx - rng.normal(0, 0.1))
    img *= (1.0 - rng.uniform(0.05, 0.3) * rad**2)[..., None]
    img *= rng.uniform(0.85, 1.12) * rng.uniform(0.9, 1.1, 3)  # exposure and white balance
    if rng.random() < 0.3:
        ring_r = rng.uniform(1.0, 1.35)
        img *= _soft(np.hypot(yy, xx) - ring_r, 0.02)[..., None]
    img = ndi.gaussian_filter(img, (0.5, 0.5, 0))
    img += rng.uniform(0.005, 0.02) * rng.standard_normal((s, s, 3))
    return _to_uint8(img), cls, mask


# ----------------------------------------------------------------------------------------------------------------------
# colonoscopy
# ----------------------------------------------------------------------------------------------------------------------


def generate_polyp(rng: np.random.Generator, size: int = 128) -> tuple[Array, Array]:
    """Draw one colonoscopy frame.

    Pink-red mucosa with haustral folds, fine vessels and specular highlights is lit by a point light at the scope
    tip (dark lumen far away, vignetting, sometimes a black octagonal frame and an inset box). Polyps (usually one,
    sometimes two, ~5% none) are domes of similar colour with slightly different shading and pit texture, from small
    to large, sometimes cut by the border.

    Args:
        rng: random generator; the only source of randomness.
        size: height and width in pixels.

    Returns:
        ``(image, mask)``: uint8 RGB image (H, W, 3) and uint8 polyp mask (H, W) in {0, 1}.
    """
    s = size
    yy, xx = _grid(s)
    px = 2.0 / s

    ly, lx = rng.uniform(-0.9, 0.9, 2) * rng.uniform(0.3, 1.2)
    lr = rng.uniform(0.1, 0.35)
    dl = np.hypot(yy - ly, xx - lx)
    theta = np.arctan2(yy - ly, xx - lx)
    height = np.zeros((s, s))
    # haustral folds: rings around the lumen, warped
    fold_f = rng.uniform(1.0, 2.2)
    warp = 0.3 * _noise(rng, (s, s), 0.15 * s) + 0.15 * np.cos(theta * int(rng.integers(2, 5)) + rng.uniform(0, 6.3))
    folds = np.sin(2 * math.pi * (fold_f * np.log(dl + 0.15) + warp))
    folds = np.sign(folds) * np.abs(folds) ** 0.6 * (0.5 + 0.5 * _noise(rng, (s, s), 0.2 * s).clip(-1, 1))
    height += rng.uniform(0.015, 0.04) * folds * np.clip(dl / 0.3, 0.3, 1.5)
    height += 0.004 * _noise(rng, (s, s), 0.01 * s)

    # polyps
    n_polyps = 0 if rng.random() < 0.05 else (2 if rng.random() < 0.12 else 1)
    mask = np.zeros((s, s), dtype=bool)
    polyp_tex = np.zeros((s, s))
    tint = np.zeros(3)
    for _ in range(n_polyps):
        lo, hi = (0.06, 0.15) if rng.random() < 0.3 else (0.15, 0.7)  # a third are small, easy to miss
        r = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
        if rng.random() < 0.2:  # at the border, partially out of view
            side = rng.uniform(0.75, 1.05)
            cy, cx = (side, rng.uniform(-0.8, 0.8)) if rng.random() < 0.5 else (rng.uniform(-0.8, 0.8), side)
            cy, cx = cy * (1 if rng.random() < 0.5 else -1), cx * (1 if rng.random() < 0.5 else -1)
        else:
            cy, cx = rng.uniform(-0.7, 0.7, 2)
        f = _blob(yy, xx, cy, cx, r, rng, rng.uniform(0.03, 0.15), rng.uniform(0.7, 1.4), rng.uniform(0, math.pi))
        dome = np.sqrt(np.clip(-f / r * (2 - np.clip(-f / r, 0, 1)), 0, 1)) * r * rng.uniform(0.25, 0.6)
        height = np.maximum(height, dome + 0.3 * height)
        inside = _soft(f, rng.uniform(0.7, 2.5) * px)
        polyp_tex += inside
        mask |= f < 0
        tint = rng.uniform(-0.07, 0.07, 3) * np.array([1.0, 1.5, 1.5])
    polyp_tex = np.clip(polyp_tex, 0, 1)
    height += polyp_tex * rng.uniform(0.002, 0.006) * _noise(rng, (s, s), max(0.012 * s, 0.7))

    # lighting from the scope tip
    gy, gx = np.gradient(height, px)
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)])
    norm = np.sqrt(1 + gy**2 + gx**2)
    lambert = np.clip((1.0 - light[0] * gy - light[1] * gx) / norm / math.sqrt(1 + light @ light), 0, 1)
    falloff = np.clip(dl / (lr * 2.2), 0, 1) ** 0.7 * (1.0 - 0.25 * (yy**2 + xx**2))
    falloff = np.maximum(falloff, 0.04)
    base = np.array([rng.uniform(0.78, 0.95), rng.uniform(0.35, 0.5), rng.uniform(0.3, 0.42)])
    colour = base * (1 + 0.05 * _noise(rng, (s, s), 0.1 * s))[..., None]
    colour = colour * (1 + tint * polyp_tex[..., None])
    ves = _ridges(_noise(rng, (s, s), max(0.015 * s, 0.8)), 0.2) * (1 - polyp_tex)
    colour = colour * (1 - rng.uniform(0.05, 0.15) * ves[..., None] * np.array([0.4, 1.0, 1.0]))
    img = colour * (lambert * falloff)[..., None] * rng.uniform(0.95, 1.3)

    # specular highlights where the surface faces the light, thresholded with fine noise
    spec_field = lambert * falloff + 0.15 * _noise(rng, (s, s), 0.012 * s)
    thr = np.quantile(spec_field, 1.0 - rng.uniform(0.002, 0.012))
    spec = np.clip((spec_field - thr) * 40.0, 0, 1)
    spec = np.clip(ndi.gaussian_filter(spec, 0.6) * 1.5, 0, 1)
    img = img * (1 - spec[..., None]) + spec[..., None]
    img = ndi.gaussian_filter(img, (0.6, 0.6, 0))
    img += rng.uniform(0.005, 0.02) * rng.standard_normal((s, s, 3))

    if rng.random() < 0.6:  # octagonal black frame of the video processor
        cut = rng.uniform(1.25, 1.6)
        frame = _soft(np.maximum(np.abs(yy) + np.abs(xx) - cut, np.maximum(np.abs(yy), np.abs(xx)) - 0.98), px)
        img *= frame[..., None]
        mask &= frame > 0.5
    if rng.random() < 0.25:  # picture-in-picture position box
        h = int(s * rng.uniform(0.18, 0.28))
        img[s - h :, :h] = np.array([0.05, rng.uniform(0.2, 0.5), 0.1]) * rng.uniform(0.5, 1.0)
        mask[s - h :, :h] = False
    return _to_uint8(img), mask.astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------------
# abdominal CT
# ----------------------------------------------------------------------------------------------------------------------


def generate_ct3d(rng: np.random.Generator, size: int = 64) -> tuple[Array, Array]:
    """Draw one abdominal CT volume.

    Axes are (D, H, W) = (inferior->superior, anterior->posterior, patient right->left), matching the LPS affine
    that :func:`make_phantom` writes (``diag(-1.5, -1.5, 2.5)`` on the transposed (W, H, D) array). The anatomy is
    scaled down to fit the small field of view. Tissues: air -1000 HU,
    subcutaneous/visceral fat ~-100, muscle ~45, bowel with gas pockets, spine (cortical bone 700-1000, cancellous
    ~250), aorta; organs liver ~60, spleen ~48, kidneys ~35, each with varied size/position and smooth shape noise.

    Args:
        rng: random generator; the only source of randomness.
        size: edge length of the cubic volume in voxels.

    Returns:
        ``(volume, labels)``: int16 HU volume (D, H, W) and uint8 labels (D, H, W) with values in 0..4
        (``CT3D_CLASSES``: background, liver, spleen, left kidney, right kidney).
    """
    s = size
    c = ((np.arange(s, dtype=np.float32) + 0.5) / s * 2.0 - 1.0).astype(np.float32)
    zz, y0, x0 = np.meshgrid(c, c, c, indexing="ij")
    ang = math.radians(rng.normal(0, 4))
    ca, sa = math.cos(ang), math.sin(ang)
    ty, tx = rng.normal(0, 0.03, 2)
    yy = (ca * (y0 - ty) - sa * (x0 - tx)).astype(np.float32)
    xx = (sa * (y0 - ty) + ca * (x0 - tx)).astype(np.float32)
    vox = 2.0 / s

    def coarse_noise(cells: int) -> Array:
        return _coarse_noise(rng, (s, s, s), cells)

    def ellipsoid(centre: Sequence[float], radii: Sequence[float], wobble: float = 0.0) -> Array:
        (cz, cy, cx), (rz, ry, rx) = centre, radii
        f = np.sqrt(((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1.0
        return f + wobble * coarse_noise(6) if wobble else f

    bx, by = rng.uniform(0.8, 0.92), rng.uniform(0.62, 0.74)
    bcy = rng.uniform(-0.05, 0.05)
    taper = 1.0 + 0.05 * zz
    f_body = np.sqrt((xx / (bx * taper)) ** 2 + ((yy - bcy) / (by * taper)) ** 2) - 1.0
    fat_t = rng.uniform(0.08, 0.2)
    f_muscle = np.sqrt((xx / (bx * taper - fat_t)) ** 2 + ((yy - bcy) / (by * taper - fat_t * 0.8)) ** 2) - 1.0
    f_cavity = (
        np.sqrt((xx / (bx * taper - fat_t - 0.06)) ** 2 + ((yy - bcy) / (by * taper - fat_t * 0.8 - 0.06)) ** 2) - 1.0
    )

    hu = np.full((s, s, s), -1000.0, dtype=np.float32)
    hu[f_body < 0] = rng.uniform(-115, -85)
    hu[f_muscle < 0] = rng.uniform(38, 52)
    cavity = f_cavity < 0
    bowel_n = coarse_noise(10)
    hu[cavity] = rng.uniform(-100, -70)
    bowel = cavity & (bowel_n > rng.uniform(-0.3, 0.3))
    hu[bowel] = rng.uniform(15, 40)
    gas = cavity & (coarse_noise(12) > 1.6) & bowel
    hu[gas] = -900.0

    # spine, psoas and aorta
    sy = bcy + by * rng.uniform(0.55, 0.65)
    d_vb = np.hypot(yy - sy, xx)
    vb_r = rng.uniform(0.12, 0.15)
    psoas = (np.hypot((yy - sy) / 0.1, (np.abs(xx) - vb_r - 0.1) / (0.08 + 0.06 * (1 - zz) / 2)) < 1) & (zz < 0.4)
    hu[psoas] = rng.uniform(40, 55)
    body_bone = d_vb < vb_r
    hu[body_bone] = rng.uniform(200, 320)
    hu[(d_vb < vb_r) & (d_vb > vb_r - 0.03)] = rng.uniform(700, 1000)
    disc = np.cos(2 * math.pi * (zz - rng.uniform(0, 1)) / rng.uniform(0.3, 0.36)) > 0.8
    hu[body_bone & disc] = rng.uniform(70, 100)
    canal = np.hypot(yy - sy - vb_r - 0.06, xx) < 0.05
    hu[canal] = 15.0
    post = (np.abs(xx) < 0.04) & (yy > sy + vb_r + 0.11) & (yy < sy + vb_r + 0.22) & (f_muscle < 0)
    hu[post] = rng.uniform(500, 800)
    aorta = np.hypot(yy - (sy - vb_r - 0.07), xx - 0.05) < rng.uniform(0.05, 0.07)
    hu[aorta] = rng.uniform(40, 55)

    # organs (later ones win on overlap); x > 0 is the patient's left
    lab = np.zeros((s, s, s), dtype=np.uint8)
    sc = rng.uniform(0.85, 1.15)
    liver_c = (rng.uniform(0.2, 0.4), rng.uniform(-0.1, 0.05), -rng.uniform(0.3, 0.42))
    f_liver = ellipsoid(liver_c, (0.6 * sc, 0.46 * sc, 0.4 * sc), 0.08)
    f_liver = np.maximum(f_liver, xx - (0.15 - 0.4 * (yy + 0.2)))  # the left lobe reaches across anteriorly
    sc2 = rng.uniform(0.8, 1.2)
    spleen_c = (rng.uniform(0.3, 0.5), bcy + rng.uniform(0.15, 0.3), rng.uniform(0.45, 0.55))
    f_spleen = ellipsoid(spleen_c, (0.32 * sc2, 0.24 * sc2, 0.15 * sc2), 0.06)
    kz = rng.uniform(-0.35, -0.15)
    kid = []
    for sign, dz in ((1.0, 0.0), (-1.0, -rng.uniform(0.04, 0.12))):  # left, then the lower right kidney
        sk = rng.uniform(0.85, 1.15)
        cx = sign * (vb_r + rng.uniform(0.17, 0.23))
        cy = sy - rng.uniform(0.0, 0.08)
        fk = ellipsoid((kz + dz, cy, cx), (0.3 * sk, 0.2 * sk, 0.15 * sk), 0.04)
        notch = ellipsoid((kz + dz, cy, cx - sign * 0.12 * sk), (0.1 * sk, 0.07 * sk, 0.07 * sk))  # renal hilum
        kid.append(np.maximum(fk, -notch))
    inside_ok = (f_cavity < 0.02) & ~body_bone & ~aorta
    organs = [
        (f_liver, 1, rng.uniform(52, 68)),
        (f_spleen, 2, rng.uniform(42, 52)),
        (kid[0], 3, rng.uniform(28, 40)),
        (kid[1], 4, rng.uniform(28, 40)),
    ]
    for f in kid:  # perirenal fat
        hu[(f < 0.45) & inside_ok] = rng.uniform(-110, -80)
    for f, k, value in organs:
        region = (f < 0) & inside_ok
        lab[region] = k
        hu[region] = value + 4.0 * coarse_noise(8)[region]

    hu = ndi.gaussian_filter(hu, 0.7)
    sigma = rng.uniform(6, 20)
    hu += sigma * ndi.gaussian_filter(rng.standard_normal((s, s, s)).astype(np.float32), 0.6) * 1.8
    table_y = bcy + by * 1.05 + 0.08
    table = (np.abs(yy - table_y + 0.15 * xx**2) < vox * 1.2) & (np.abs(xx) < 0.95)
    hu[table] = 150.0
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), lab


# ----------------------------------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _png_bytes(array: Array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


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


def _nifti_bytes(array_dhw: Array, spacing: tuple[float, float, float], dtype: type) -> bytes:
    import nibabel as nib

    data: Array = np.ascontiguousarray(np.transpose(array_dhw, (2, 1, 0)).astype(dtype))  # (W, H, D) = (i, j, k)
    affine = nifti_affine(data.shape, spacing)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def nifti_affine(shape: int | Sequence[int], spacing: tuple[float, float, float] = CT3D_SPACING) -> Array:
    """Affine that :func:`make_phantom` writes for a ``ct3d`` volume of NIfTI shape (i, j, k) = (W, H, D).

    The axes are stored in LPS order (``diag(-sx, -sy, sz)``, as in CT converted from DICOM) and the origin is chosen
    so that the volume centre lies at (0, -20, -150) mm in RAS world coordinates (an upper-abdominal table position).
    """
    dims = [int(shape)] * 3 if isinstance(shape, int) else [int(v) for v in shape]
    sx, sy, sz = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (dims[0] - 1) / 2.0, sy * (dims[1] - 1) / 2.0 - 20.0, -sz * (dims[2] - 1) / 2.0 - 150.0]
    return affine


# ----------------------------------------------------------------------------------------------------------------------
# splitting and the public entry point
# ----------------------------------------------------------------------------------------------------------------------


def _allocate(m: int, fractions: Sequence[float], at_least_one: bool) -> list[int]:
    """Largest-remainder allocation of ``m`` items to parts; optionally one item per non-empty part first."""
    k = len(fractions)
    counts = [0] * k
    active = [i for i in range(k) if fractions[i] > 0]
    if at_least_one and m >= len(active):
        for i in active:
            counts[i] = 1
    rest = m - sum(counts)
    raw = [rest * f for f in fractions]
    extra = [int(math.floor(r)) for r in raw]
    rem = rest - sum(extra)
    order = sorted(range(k), key=lambda i: (-(raw[i] - extra[i]), i))
    for i in order[:rem]:
        extra[i] += 1
    return [c + e for c, e in zip(counts, extra)]


def _split(
    n: int, strata: Sequence[int] | None, fractions: Sequence[float], rng: np.random.Generator
) -> list[list[int]]:
    """Deterministic (optionally stratified) assignment of indices ``0..n-1`` to the parts, each part sorted."""
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(0 if strata is None else int(strata[i]), []).append(i)
    parts: list[list[int]] = [[] for _ in fractions]
    for key in sorted(groups):
        members = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        counts = _allocate(len(members), fractions, at_least_one=strata is not None)
        start = 0
        for p, cnt in enumerate(counts):
            parts[p].extend(members[start : start + cnt])
            start += cnt
    return [sorted(p) for p in parts]


def _skin_schedule(n: int, seed: int) -> list[int]:
    """Classes of images ``0..n-1``: a golden-ratio (low-discrepancy) walk through the ISIC class distribution.

    Unlike i.i.d. sampling, every window of ~150 consecutive images contains every class, so rare classes (DF 1.1%)
    are present even in small datasets, while image ``i`` still does not depend on ``n``.
    """
    offset = float(np.random.default_rng([seed, _name_code("skin"), 1]).random())
    cdf = np.cumsum(SKIN_PRIORS) / sum(SKIN_PRIORS)
    u = (offset + np.arange(n) * _GOLDEN) % 1.0
    return [int(min(np.searchsorted(cdf, x, side="right"), len(SKIN_CLASSES) - 1)) for x in u]


_META: dict[str, dict[str, Any]] = {
    "cxr": {
        "description": "Synthetic frontal chest radiographs with six subtle multi-label findings and lung masks.",
        "task": "multilabel",
        "modality": "DX",
        "classes": list(CXR_CLASSES),
    },
    "skin": {
        "description": "Synthetic dermoscopy images, ISIC 2018 task 3 classes and class imbalance, lesion masks.",
        "task": "multiclass",
        "modality": "XC",
        "classes": list(SKIN_CLASSES),
    },
    "polyp": {
        "description": "Synthetic colonoscopy frames with binary polyp segmentation masks.",
        "task": "segmentation",
        "modality": "ES",
        "classes": list(POLYP_CLASSES),
    },
    "ct3d": {
        "description": "Synthetic abdominal CT volumes (HU) with liver, spleen and kidney labels.",
        "task": "segmentation",
        "modality": "CT",
        "classes": list(CT3D_CLASSES),
    },
}


def make_phantom(
    name: str,
    out_dir: str | Path,
    n: int = 1000,
    seed: int = 0,
    image_size: int | None = None,
    dicom: bool = False,
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write n images (+ labels/masks) under out_dir and out_dir/datalist.json; return the datalist path.

    Layout (paths in the datalist are relative to ``out_dir``, POSIX style):

    * cxr: ``images/cxr_00000.png`` (or ``.dcm`` with ``dicom=True``), ``masks/cxr_00000.png`` (lung, 0/1);
      items ``{"image", "label": multi-hot list, "mask"}``.
    * skin: ``images/skin_00000.png`` (RGB), ``masks/skin_00000.png`` (lesion, 0/1);
      items ``{"image", "label": one-hot list, "mask"}``.
    * polyp: ``images/polyp_00000.png`` (RGB), ``masks/polyp_00000.png`` (0/1); items ``{"image", "label": mask}``.
    * ct3d: ``images/ct3d_00000.nii.gz`` (int16 HU), ``labels/ct3d_00000.nii.gz`` (uint8 0..4);
      items ``{"image", "label"}``.

    Masks are stored as label values (0/1), not scaled to 255. The same arguments give byte-identical files.

    Args:
        name: one of ``PHANTOMS``.
        out_dir: output directory (created if needed; existing files with the same names are overwritten).
        n: number of images.
        seed: non-negative dataset seed; image ``i`` is drawn from ``np.random.default_rng([seed, i, code(name)])``.
        image_size: edge length in pixels/voxels; defaults to 128 (2D) or 64 (ct3d).
        dicom: write the cxr images as DICOM (DX, MONOCHROME2, 8-bit) instead of PNG; only valid for ``"cxr"``.
        splits: fractions of (training, validation, test); the multiclass skin split is stratified by class.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: unknown ``name``, ``dicom`` for a non-cxr phantom, or invalid ``n``, ``seed``, ``size``, ``splits``.
    """
    if name not in PHANTOMS:
        raise ValueError(f"unknown phantom {name!r}; valid names: {', '.join(PHANTOMS)}")
    if dicom and name != "cxr":
        raise ValueError(f"dicom=True is only supported for the 'cxr' phantom, not {name!r}")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    size = DEFAULT_SIZES[name] if image_size is None else int(image_size)
    if size < 16:
        raise ValueError(f"image_size must be >= 16, got {size}")
    fr = [float(f) for f in splits]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"splits must be three non-negative fractions summing to 1, got {splits}")
    n, seed = int(n), int(seed)

    root = Path(out_dir)
    for sub in ("images", "labels" if name == "ct3d" else "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    code = _name_code(name)
    schedule = _skin_schedule(n, seed) if name == "skin" else None
    writer: Callable[[int, np.random.Generator], tuple[dict[str, Any], int]] = {
        "cxr": lambda i, rng: _write_cxr(root, i, rng, size, seed, dicom),
        "skin": lambda i, rng: _write_skin(root, i, rng, size, schedule[i] if schedule else None),
        "polyp": lambda i, rng: _write_polyp(root, i, rng, size),
        "ct3d": lambda i, rng: _write_ct3d(root, i, rng, size),
    }[name]
    items: list[dict[str, Any]] = []
    strata: list[int] = []
    for i in range(n):
        item, stratum = writer(i, np.random.default_rng([seed, i, code]))
        items.append(item)
        strata.append(stratum)

    parts = _split(n, strata if name == "skin" else None, fr, np.random.default_rng([seed, code, 2]))
    datalist: dict[str, Any] = {"name": f"s4mi-phantom-{name}", **_META[name], "seed": seed}
    for key, part in zip(("training", "validation", "test"), parts):
        datalist[key] = [items[i] for i in part]
    path = root / "datalist.json"
    _write_atomic(path, (json.dumps(datalist, indent=4) + "\n").encode())
    return path


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


def _write_skin(
    root: Path, i: int, rng: np.random.Generator, size: int, label: int | None
) -> tuple[dict[str, Any], int]:
    image, cls, mask = generate_skin(rng, size, label=label)
    stem = f"skin_{i:05d}"
    _write_atomic(root / f"images/{stem}.png", _png_bytes(image))
    _write_atomic(root / f"masks/{stem}.png", _png_bytes(mask))
    onehot = [int(k == cls) for k in range(len(SKIN_CLASSES))]
    return {"image": f"images/{stem}.png", "label": onehot, "mask": f"masks/{stem}.png"}, cls


def _write_polyp(root: Path, i: int, rng: np.random.Generator, size: int) -> tuple[dict[str, Any], int]:
    image, mask = generate_polyp(rng, size)
    stem = f"polyp_{i:05d}"
    _write_atomic(root / f"images/{stem}.png", _png_bytes(image))
    _write_atomic(root / f"masks/{stem}.png", _png_bytes(mask))
    return {"image": f"images/{stem}.png", "label": f"masks/{stem}.png"}, 0


def _write_ct3d(root: Path, i: int, rng: np.random.Generator, size: int) -> tuple[dict[str, Any], int]:
    volume, labels = generate_ct3d(rng, size)
    stem = f"ct3d_{i:05d}"
    _write_atomic(root / f"images/{stem}.nii.gz", _nifti_bytes(volume, CT3D_SPACING, np.int16))
    _write_atomic(root / f"labels/{stem}.nii.gz", _nifti_bytes(labels, CT3D_SPACING, np.uint8))
    return {"image": f"images/{stem}.nii.gz", "label": f"labels/{stem}.nii.gz"}, 0
