r"""Knee-like synthetic 3D phantoms (an OAI stand-in for the streaming datamodules).

Axes follow RAS+: axis 0 is medio-lateral (``+x`` right, the coarse slice axis of sagittal knee
MRI), axis 1 antero-posterior (``+y`` anterior), axis 2 infero-superior (``+z`` superior).
A phantom holds the femur (shaft plus two condyles) above the tibia (plateau plus shaft) and a
fibula, each bone with a dark cortical rim around brighter marrow; two thin cartilage plates on
the facing surfaces (label 1 femoral, label 2 tibial cartilage, everything else 0); soft tissue
with a subcutaneous fat layer; a smooth multiplicative bias field and mild Rician-like noise.

Per subject (seed) the anatomy varies (bone radii, condyle sizes, cartilage thickness, joint
gap); per side and visit the pose varies (small rotation, translation and flexion) as do noise
and bias; a left knee is the mirror image of the right one; later visits lose a little
cartilage. Sizes are defined for the default field of view (``(48, 64, 64)`` voxels of
``(2, 1, 1)`` mm) and scale with the field of view along each axis.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..options import Side, either, values
from .nifti import centered_origin, prepare_output_dir, ras_affine, save_nifti

__all__ = [
    "SYNTH3D_CSV",
    "SYNTH3D_COLUMNS",
    "FEMORAL_CARTILAGE",
    "TIBIAL_CARTILAGE",
    "generate_knee_phantom",
    "subject_seed",
    "write_synth3d_pool",
]

SYNTH3D_CSV = "pool.csv"
SYNTH3D_COLUMNS = ("path", "label", "subject", "side", "visit")
FEMORAL_CARTILAGE = 1
TIBIAL_CARTILAGE = 2

_REF_SHAPE = (48, 64, 64)
_REF_SPACING = (2.0, 1.0, 1.0)
_SIDES = values(Side)


def _ellipsoid(p: Sequence[np.ndarray], radii: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid centred at the origin."""
    k0 = np.sqrt(sum((q / r) ** 2 for q, r in zip(p, radii)))
    k1 = np.sqrt(sum((q / r**2) ** 2 for q, r in zip(p, radii)))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _rod(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    rx: float,
    ry: float,
    z_lo: float,
    z_hi: float,
    cap: float,
) -> np.ndarray:
    """Signed distance to an elliptic rod along z over ``[z_lo, z_hi]`` with ellipsoidal caps."""
    return _ellipsoid((x, y, z - np.clip(z, z_lo, z_hi)), (rx, ry, cap))


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union (polynomial smooth minimum with blend width ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` = Rz @ Ry @ Rx for angles (radians) about x, y, z."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rotate(p: Sequence[np.ndarray], rot: np.ndarray) -> tuple[np.ndarray, ...]:
    """Apply the transpose of ``rot`` to points ``p`` (world to local frame)."""
    return tuple(sum(rot[j, i] * p[j] for j in range(3)) for i in range(3))


def subject_seed(seed: int, subject: int) -> int:
    """Seed of subject ``subject`` in a pool generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(subject)]).generate_state(1)[0])


def generate_knee_phantom(
    seed: int,
    shape: Sequence[int] = _REF_SHAPE,
    spacing: Sequence[float] = _REF_SPACING,
    side: str = "right",
    visit: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One knee phantom.

    Args:
        seed: subject seed (anatomy); pose, noise and bias also depend on ``side`` and ``visit``.
        shape: grid ``(X, Y, Z)``, each >= 8.
        spacing: voxel size (mm) per axis.
        side: ``"left"`` or ``"right"`` (a left knee mirrors a right one along axis 0).
        visit: visit index >= 0 (later visits: new pose, slightly thinner cartilage).

    Returns:
        ``(image, label)``: float32 ``(X, Y, Z)`` image in [0, 1] and uint8 ``(X, Y, Z)`` labels
        (0 background, 1 femoral cartilage, 2 tibial cartilage).
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must have 3 entries, each >= 8; got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must have 3 positive entries; got {spacing}")
    if side not in _SIDES:
        raise ValueError(f"side must be {either(Side)}; got {side!r}")
    if int(visit) < 0:
        raise ValueError(f"visit must be >= 0; got {visit}")

    extent = [(n - 1) * s for n, s in zip(shape, spacing)]
    ref = [(n - 1) * s for n, s in zip(_REF_SHAPE, _REF_SPACING)]
    kx, ky, kz = (e / r for e, r in zip(extent, ref))
    kmin = min(kx, ky, kz)

    # --- anatomy (subject) ---------------------------------------------------------------------
    arng = np.random.default_rng(int(seed))
    u = arng.uniform
    leg = (u(0.43, 0.47) * extent[0], u(0.46, 0.5) * extent[1])
    fat = u(2.5, 4.0) * kmin
    shaft_f = (u(10.0, 13.0) * kx, u(9.0, 11.5) * ky)
    cond_dx = u(9.5, 12.0) * kx
    cond_med = (u(8.0, 10.0) * kx, u(11.0, 14.0) * ky, u(9.0, 11.0) * kz)
    lat_scale = u(0.85, 0.95)
    cond_lat = tuple(r * lat_scale for r in cond_med)
    cond_y = u(-3.0, -1.0) * ky
    plateau = (u(21.0, 25.0) * kx, u(14.0, 17.0) * ky, u(2.5, 4.0) * kz)
    plateau_h = u(8.0, 12.0) * kz
    shaft_t = (u(9.5, 12.0) * kx, u(8.5, 10.5) * ky)
    fibula_r = u(3.5, 4.5) * min(kx, ky)
    t_fem = u(2.0, 3.0) * kz
    t_tib = u(1.6, 2.6) * kz
    gap = u(0.6, 1.8) * kz
    tissue_val, fat_val = u(0.25, 0.32), u(0.5, 0.6)
    marrow_val, cortex_val, cart_val = u(0.38, 0.46), u(0.08, 0.15), u(0.74, 0.84)
    cortex = 1.3 * kmin

    # --- side, visit: pose, cartilage loss, bias and noise -------------------------------------
    side_index = _SIDES.index(side)
    vrng = np.random.default_rng(np.random.SeedSequence([int(seed), side_index, int(visit)]))
    v = vrng.uniform
    loss = 1.0 - 0.04 * int(visit) * v(0.5, 1.0)
    floor = 1.2 * spacing[2]
    t_fem = max(t_fem * loss, floor)
    t_tib = max(t_tib * loss, floor)
    rot = _rotation(np.radians(v(-4.0, 4.0, size=3)))
    shift = v(-3.0, 3.0, size=3) * np.array([kx, ky, kz])
    flexion = _rotation((math.radians(v(-6.0, 6.0)), 0.0, 0.0))

    axes = [(np.arange(n) - 0.5 * (n - 1)) * s for n, s in zip(shape, spacing)]
    world = np.meshgrid(*axes, indexing="ij")
    p = _rotate([w - t for w, t in zip(world, shift)], rot)
    x, y, z = p
    if side == "left":
        x = -x
    # the medial condyle of a right knee lies towards the body's midline (-x in RAS)
    med, lat = -1.0, 1.0

    # tibia: plateau top at -(gap/2 + t_tib)
    z_tib = -(0.5 * gap + t_tib)
    tibia = _smin(
        _rod(
            x,
            y,
            z,
            plateau[0],
            plateau[1],
            z_tib - plateau[2] - plateau_h,
            z_tib - plateau[2],
            plateau[2],
        ),
        _rod(x, y - 1.5 * ky, z, shaft_t[0], shaft_t[1], -1e3, z_tib - 0.8 * plateau_h, shaft_t[0]),
        4.0 * kmin,
    )
    fibula = _rod(
        x - lat * 0.75 * plateau[0],
        y + 0.45 * plateau[1],
        z,
        fibula_r,
        fibula_r,
        -1e3,
        z_tib - plateau_h,
        fibula_r,
    )
    # femur (own flexion about the joint centre): condyle bottoms at gap/2 + t_fem
    xf, yf, zf = _rotate((x, y, z), flexion)
    z_fem = 0.5 * gap + t_fem
    cond_m = _ellipsoid((xf - med * cond_dx, yf - cond_y, zf - z_fem - cond_med[2]), cond_med)
    cond_l = _ellipsoid((xf - lat * cond_dx, yf - cond_y, zf - z_fem - cond_lat[2]), cond_lat)
    condyles = _smin(cond_m, cond_l, 3.0 * kmin)
    femur = _smin(
        condyles,
        _rod(xf, yf, zf, shaft_f[0], shaft_f[1], z_fem + cond_med[2] + 4.0 * kz, 1e3, shaft_f[1]),
        6.0 * kmin,
    )
    leg_d = _ellipsoid((x, y), leg)

    # --- labels --------------------------------------------------------------------------------
    label = np.zeros(shape, np.uint8)
    fem_cart = (femur > 0) & (condyles <= t_fem) & (zf < z_fem + 0.6 * cond_lat[2])
    tib_cart = (tibia > 0) & (tibia <= t_tib) & (z > z_tib - plateau[2]) & ~fem_cart
    label[fem_cart] = FEMORAL_CARTILAGE
    label[tib_cart] = TIBIAL_CARTILAGE

    # --- image ---------------------------------------------------------------------------------
    width = 0.6 * min(spacing)

    def inside(d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d / width, 0.0, 1.0)

    def paint(img: np.ndarray, alpha: np.ndarray, value: float) -> np.ndarray:
        return img * (1.0 - alpha) + value * alpha

    image = paint(np.zeros(shape), inside(leg_d), fat_val)
    image = paint(image, inside(leg_d + fat), tissue_val)
    for bone in (femur, tibia, fibula):
        image = paint(image, inside(bone), cortex_val)
        image = paint(image, inside(bone + cortex), marrow_val)
    cart_alpha = np.maximum(
        inside(condyles - t_fem) * (1.0 - inside(femur)) * (zf < z_fem + 0.6 * cond_lat[2]),
        inside(tibia - t_tib) * (1.0 - inside(tibia)) * (z > z_tib - plateau[2]),
    )
    image = paint(image, cart_alpha, cart_val)

    coords = [a / max(0.5 * e, 1e-6) for a, e in zip(axes, extent)]
    grid = np.meshgrid(*coords, indexing="ij")
    log_bias = sum(v(-0.12, 0.12) * g + v(-0.08, 0.08) * g * g for g in grid)
    image = image * np.exp(log_bias)
    sigma = v(0.01, 0.025)
    n1 = vrng.standard_normal(shape)
    n2 = vrng.standard_normal(shape)
    image = np.sqrt((image + sigma * n1) ** 2 + (sigma * n2) ** 2)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def write_synth3d_pool(
    out_dir: str | Path,
    subjects: int,
    seed: int = 0,
    shape: Sequence[int] = _REF_SHAPE,
    spacing: Sequence[float] = _REF_SPACING,
    visits: int = 1,
    sides: Sequence[str] = _SIDES,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a pool of knee phantoms as 3D NIfTI and ``pool.csv``.

    Files: ``images/sub-{s:04d}_v{visit}_{side}.nii.gz`` (float32) and the same name under
    ``labels/`` (uint8), with a RAS affine of diagonal ``spacing`` and the grid centre at the
    world origin. CSV columns :data:`SYNTH3D_COLUMNS`: ``path`` and ``label`` relative to the
    CSV's folder, ``subject`` (``sub-XXXX``), ``side``, ``visit`` (0-based).
    ``progress(done, total)`` is called after each image.

    Raises:
        DatasetDirError: ``out_dir`` is a file or a non-empty folder without ``pool.csv``.

    Returns:
        Path of the CSV.
    """
    subjects, visits = int(subjects), int(visits)
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1; got {subjects}")
    if visits < 1:
        raise ValueError(f"visits must be >= 1; got {visits}")
    sides = tuple(sides)
    if not sides or any(s not in _SIDES for s in sides) or len(set(sides)) != len(sides):
        raise ValueError(f"sides must be distinct entries of {_SIDES}; got {sides}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    out = prepare_output_dir(out_dir, SYNTH3D_CSV)
    (out / "images").mkdir(exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    affine = ras_affine(spacing, centered_origin(shape, spacing))
    total = subjects * visits * len(sides)
    rows = []
    for s in range(subjects):
        sub_seed = subject_seed(seed, s)
        for visit in range(visits):
            for side in sides:
                image, label = generate_knee_phantom(sub_seed, shape, spacing, side, visit)
                name = f"sub-{s:04d}_v{visit}_{side}.nii.gz"
                save_nifti(out / "images" / name, image, affine)
                save_nifti(out / "labels" / name, label, affine)
                rows.append(
                    {
                        "path": f"images/{name}",
                        "label": f"labels/{name}",
                        "subject": f"sub-{s:04d}",
                        "side": side,
                        "visit": visit,
                    }
                )
                if progress is not None:
                    progress(len(rows), total)
    csv_path = out / SYNTH3D_CSV
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SYNTH3D_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
