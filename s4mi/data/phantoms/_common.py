"""Helpers every phantom shares: noise fields, blobs, 8-bit conversion and atomic file writes."""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

Array = np.ndarray


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
