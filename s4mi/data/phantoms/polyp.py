"""Colonoscopy frames: RGB PNG with a binary polyp mask."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._common import (
    Array,
    _blob,
    _grid,
    _noise,
    _png_bytes,
    _ridges,
    _soft,
    _to_uint8,
    _write_atomic,
)

POLYP_CLASSES: tuple[str, ...] = ("background", "polyp")


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


def _write_polyp(root: Path, i: int, rng: np.random.Generator, size: int) -> tuple[dict[str, Any], int]:
    image, mask = generate_polyp(rng, size)
    stem = f"polyp_{i:05d}"
    _write_atomic(root / f"images/{stem}.png", _png_bytes(image))
    _write_atomic(root / f"masks/{stem}.png", _png_bytes(mask))
    return {"image": f"images/{stem}.png", "label": f"masks/{stem}.png"}, 0
