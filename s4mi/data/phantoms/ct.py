"""Abdominal CT volumes in Hounsfield units (NIfTI) with a multi-class organ label map."""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._common import (
    Array,
    _coarse_noise,
    _write_atomic,
)

CT3D_CLASSES: tuple[str, ...] = ("background", "liver", "spleen", "left_kidney", "right_kidney")
CT3D_SPACING: tuple[float, float, float] = (1.5, 1.5, 2.5)  # x, y, z in mm


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


def _write_ct3d(root: Path, i: int, rng: np.random.Generator, size: int) -> tuple[dict[str, Any], int]:
    volume, labels = generate_ct3d(rng, size)
    stem = f"ct3d_{i:05d}"
    _write_atomic(root / f"images/{stem}.nii.gz", _nifti_bytes(volume, CT3D_SPACING, np.int16))
    _write_atomic(root / f"labels/{stem}.nii.gz", _nifti_bytes(labels, CT3D_SPACING, np.uint8))
    return {"image": f"images/{stem}.nii.gz", "label": f"labels/{stem}.nii.gz"}, 0
