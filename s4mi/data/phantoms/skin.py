"""Dermoscopy photographs: RGB PNG, the seven ISIC 2018 task 3 classes and a lesion mask."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._common import (
    Array,
    _blob,
    _gaussian_spots,
    _grid,
    _name_code,
    _noise,
    _png_bytes,
    _ridges,
    _soft,
    _to_uint8,
    _write_atomic,
)

SKIN_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

#: ISIC 2018 task 3 training-set class frequencies, in ``SKIN_CLASSES`` order.
SKIN_PRIORS: tuple[float, ...] = (0.111, 0.670, 0.051, 0.033, 0.110, 0.011, 0.014)

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


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


def _skin_schedule(n: int, seed: int) -> list[int]:
    """Classes of images ``0..n-1``: a golden-ratio (low-discrepancy) walk through the ISIC class distribution.

    Unlike i.i.d. sampling, every window of ~150 consecutive images contains every class, so rare classes (DF 1.1%)
    are present even in small datasets, while image ``i`` still does not depend on ``n``.
    """
    offset = float(np.random.default_rng([seed, _name_code("skin"), 1]).random())
    cdf = np.cumsum(SKIN_PRIORS) / sum(SKIN_PRIORS)
    u = (offset + np.arange(n) * _GOLDEN) % 1.0
    return [int(min(np.searchsorted(cdf, x, side="right"), len(SKIN_CLASSES) - 1)) for x in u]


def _write_skin(
    root: Path, i: int, rng: np.random.Generator, size: int, label: int | None
) -> tuple[dict[str, Any], int]:
    image, cls, mask = generate_skin(rng, size, label=label)
    stem = f"skin_{i:05d}"
    _write_atomic(root / f"images/{stem}.png", _png_bytes(image))
    _write_atomic(root / f"masks/{stem}.png", _png_bytes(mask))
    onehot = [int(k == cls) for k in range(len(SKIN_CLASSES))]
    return {"image": f"images/{stem}.png", "label": onehot, "mask": f"masks/{stem}.png"}, cls
