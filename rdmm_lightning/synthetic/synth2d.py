r"""The synthetic 2D pairs of the RDMM paper (moving shapes with per-object motion).

Each image shows a large foreground shape (ellipse or rectangle) holding two inner objects, and
two to five small outer objects around it; shapes are rectangles, triangles and ellipses, each
object with its own intensity. Between source and target every object gets its own random shift
(up to 8% of the image), isotropic scale (0.85-1.15) and rotation (up to 20 degrees) about its
centre, so no single affine map explains a pair. Objects never overlap (inner objects lie inside
the foreground) and stay inside the image in both images.

Arrays are ``(X, Y)`` in voxel order (axis 0 first). Labels: 0 background, 1 foreground
(without the inner objects), 2-3 inner objects, 4.. outer objects.

The ground-truth regularizer of the paper uses multi-Gaussian pre-weights that differ inside and
outside the foreground region: :func:`predefined_pre_weights` builds them from the region mask.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..ops.gaussian import gaussian_taps
from ..ops.pre_weights import pre_weights_from_region
from .nifti import prepare_output_dir, save_nifti

__all__ = [
    "SYNTH2D_SIGMAS",
    "SYNTH2D_INSIDE_H2",
    "SYNTH2D_OUTSIDE_H2",
    "SYNTH2D_WEIGHT_SMOOTH_SIGMA",
    "SYNTH2D_CSV",
    "SYNTH2D_COLUMNS",
    "Synth2DPair",
    "generate_synth2d_pair",
    "predefined_pre_weights",
    "synth2d_pre_weights",
    "gaussian_smooth_np",
    "pair_seed",
    "write_synth2d",
]

SYNTH2D_SIGMAS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2)
"""Multi-Gaussian standard deviations (domain units) of the ground-truth regularizer."""
SYNTH2D_INSIDE_H2: tuple[float, ...] = (0.2, 0.5, 0.3, 0.0)
"""Squared pre-weights ``h_i^2`` inside the foreground region."""
SYNTH2D_OUTSIDE_H2: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0)
"""Squared pre-weights ``h_i^2`` outside the foreground region."""
SYNTH2D_WEIGHT_SMOOTH_SIGMA: float = 0.02
"""Smoothing of the region mask (domain units, i.e. ``0.02 * (size - 1)`` voxels)."""
SYNTH2D_CSV = "pairs.csv"
SYNTH2D_COLUMNS = ("source", "target", "source_label", "target_label", "source_region")

_MAX_SHIFT = 0.08  # fraction of the image size
_SCALE_RANGE = (0.85, 1.15)
_MAX_ROTATION = math.radians(20.0)
_KINDS = ("rectangle", "triangle", "ellipse")


@dataclass(frozen=True)
class Synth2DPair:
    """One synthetic pair; all arrays ``(X, Y)``.

    Attributes:
        source, target: float32 images in [0, 1].
        source_label, target_label: uint8 label maps (0 background, one label per object).
        source_region, target_region: uint8 foreground-region masks (foreground shape with its
            inner objects); ``source_region`` defines the ground-truth regularizer.
        seed: the seed that generated the pair.
    """

    source: np.ndarray
    target: np.ndarray
    source_label: np.ndarray
    target_label: np.ndarray
    source_region: np.ndarray
    target_region: np.ndarray
    seed: int

    @property
    def num_objects(self) -> int:
        """Number of objects (labels > 0)."""
        return int(self.source_label.max())


@dataclass(frozen=True)
class _Shape:
    """A shape with centre ``(cx, cy)`` (voxels), semi-axes ``(a, b)``, rotation ``angle``."""

    kind: str
    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def moved(self, shift: tuple[float, float], scale: float, rotation: float) -> _Shape:
        """The shape shifted, scaled and rotated about its own centre."""
        return _Shape(
            self.kind,
            self.cx + shift[0],
            self.cy + shift[1],
            self.a * scale,
            self.b * scale,
            self.angle + rotation,
        )

    def distance(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Approximate signed distance (voxels, negative inside) on grids ``xx, yy``."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = xx - self.cx, yy - self.cy
        u = c * dx + s * dy
        v = -s * dx + c * dy
        if self.kind == "rectangle":
            return np.maximum(np.abs(u) - self.a, np.abs(v) - self.b)
        if self.kind == "ellipse":
            k0 = np.sqrt((u / self.a) ** 2 + (v / self.b) ** 2)
            k1 = np.sqrt((u / self.a**2) ** 2 + (v / self.b**2) ** 2)
            return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)
        if self.kind == "triangle":
            # vertices on the ellipse with semi-axes (a, b) at 0, 120 and 240 degrees;
            # the centroid is the centre, so rotating about the centre keeps the centroid
            h = math.sqrt(3.0) / 2.0
            verts = [(self.a, 0.0), (-0.5 * self.a, h * self.b), (-0.5 * self.a, -h * self.b)]
            d = None
            for k in range(3):
                (x0, y0), (x1, y1) = verts[k], verts[(k + 1) % 3]
                ex, ey = x1 - x0, y1 - y0
                norm = math.hypot(ex, ey)
                nx, ny = ey / norm, -ex / norm  # outward normal of a counter-clockwise polygon
                dk = (u - x0) * nx + (v - y0) * ny
                d = dk if d is None else np.maximum(d, dk)
            return d
        raise ValueError(f"unknown shape kind {self.kind!r}")


def _random_motion(rng: np.random.Generator, size: int) -> tuple[tuple[float, float], float, float]:
    """Shift (uniform in a disc of radius 8% of ``size``), scale and rotation."""
    r = _MAX_SHIFT * size * math.sqrt(rng.uniform())
    t = rng.uniform(0.0, 2.0 * math.pi)
    scale = rng.uniform(*_SCALE_RANGE)
    rotation = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
    return (r * math.cos(t), r * math.sin(t)), scale, rotation


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _sample_scene(
    rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray
) -> tuple[list[_Shape], list[_Shape]] | None:
    """Source and target shapes (foreground, 2 inner, 2-5 outer), or None on a failed draw."""
    c0 = 0.5 * (size - 1)
    fg_src = fg_tgt = None
    for _ in range(50):
        a, b = rng.uniform(0.2, 0.28, size=2) * size
        shape = _Shape(
            str(rng.choice(["ellipse", "rectangle"])),
            c0 + rng.uniform(-0.05, 0.05) * size,
            c0 + rng.uniform(-0.05, 0.05) * size,
            a,
            b,
            rng.uniform(0.0, math.pi),
        )
        moved = shape.moved(*_random_motion(rng, size))
        if not any(_touches_border(s.distance(xx, yy) <= 2.0) for s in (shape, moved)):
            fg_src, fg_tgt = shape, moved
            break
    if fg_src is None:
        return None
    src, tgt = [fg_src], [fg_tgt]
    d_fg = (fg_src.distance(xx, yy), fg_tgt.distance(xx, yy))
    taken = (np.zeros((size, size), bool), np.zeros((size, size), bool))

    def try_place(shape: _Shape, moved: _Shape, inner: bool) -> bool:
        masks = []
        for k, s in enumerate((shape, moved)):
            near = s.distance(xx, yy) <= 1.5
            if _touches_border(near) or (near & taken[k]).any():
                return False
            if inner and (near & (d_fg[k] > -2.0)).any():
                return False
            if not inner and (near & (d_fg[k] <= 2.5)).any():
                return False
            masks.append(near)
        for k in range(2):
            taken[k][...] |= masks[k]
        src.append(shape)
        tgt.append(moved)
        return True

    inside = np.argwhere(d_fg[0] < -0.12 * size)
    for _ in range(2):
        for _attempt in range(200):
            if len(inside) == 0:
                return None
            cx, cy = inside[rng.integers(len(inside))]
            shape = _Shape(
                str(rng.choice(_KINDS)),
                float(cx),
                float(cy),
                *(rng.uniform(0.05, 0.09, size=2) * size),
                rng.uniform(0.0, 2.0 * math.pi),
            )
            if try_place(shape, shape.moved(*_random_motion(rng, size)), inner=True):
                break
        else:
            return None
    wanted = int(rng.integers(2, 6))
    placed = 0
    for _attempt in range(300):
        if placed == wanted:
            break
        shape = _Shape(
            str(rng.choice(_KINDS)),
            rng.uniform(0.0, size - 1.0),
            rng.uniform(0.0, size - 1.0),
            *(rng.uniform(0.035, 0.06, size=2) * size),
            rng.uniform(0.0, 2.0 * math.pi),
        )
        placed += try_place(shape, shape.moved(*_random_motion(rng, size)), inner=False)
    if placed < 2:
        return None
    return src, tgt


def _render(
    shapes: Sequence[_Shape], intensities: np.ndarray, xx: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (float32, 1-voxel soft edges), labels (uint8) and region mask (uint8)."""
    image = np.zeros(xx.shape, np.float64)
    label = np.zeros(xx.shape, np.uint8)
    region = None
    for k, (shape, value) in enumerate(zip(shapes, intensities)):
        d = shape.distance(xx, yy)
        alpha = np.clip(0.5 - d, 0.0, 1.0)
        image = image * (1.0 - alpha) + value * alpha
        label[d <= 0.0] = k + 1
        if k == 0:
            region = (d <= 0.0).astype(np.uint8)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label, region


def generate_synth2d_pair(seed: int, size: int = 200) -> Synth2DPair:
    """Generate one reproducible synthetic pair of ``(size, size)`` images (``size >= 48``)."""
    size = int(size)
    if size < 48:
        raise ValueError(f"size must be >= 48; got {size}")
    rng = np.random.default_rng(int(seed))
    xx, yy = np.meshgrid(
        np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij"
    )
    for _ in range(1000):
        scene = _sample_scene(rng, size, xx, yy)
        if scene is not None:
            break
    else:  # pragma: no cover - practically unreachable for size >= 48
        raise RuntimeError(f"could not place the objects for seed {seed}, size {size}")
    src, tgt = scene
    n = len(src)
    levels = np.linspace(0.25, 1.0, n)
    intensities = rng.permutation(levels) + rng.uniform(-0.02, 0.02, size=n)
    source, source_label, source_region = _render(src, intensities, xx, yy)
    target, target_label, target_region = _render(tgt, intensities, xx, yy)
    return Synth2DPair(
        source, target, source_label, target_label, source_region, target_region, int(seed)
    )


def gaussian_smooth_np(array: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Separable Gaussian smoothing of an ``(*S)`` array (float64 result), kernel truncated at
    4 sigma (:func:`rdmm_lightning.ops.gaussian.gaussian_taps`), edge values repeated beyond the
    border. ``sigma_voxels <= 0`` copies the input."""
    out = np.asarray(array, dtype=np.float64)
    if sigma_voxels <= 0:
        return out.copy()
    kernel = gaussian_taps(float(sigma_voxels), 4.0).numpy()
    r = kernel.size // 2
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=axis)
        out = windows @ kernel
    return out


def predefined_pre_weights(
    region_mask: np.ndarray,
    inside_h2: Sequence[float] = SYNTH2D_INSIDE_H2,
    outside_h2: Sequence[float] = SYNTH2D_OUTSIDE_H2,
    smooth_sigma_voxels: float | None = None,
) -> np.ndarray:
    """Predefined RDMM pre-weights from a region mask.

    ``h = m * sqrt(inside_h2) + (1 - m) * sqrt(outside_h2)`` with ``m`` the Gaussian-smoothed
    mask, then divided by its per-voxel L2 norm, so ``h >= 0`` and ``sum_i h_i^2 = 1``
    (:func:`rdmm_lightning.ops.pre_weights.pre_weights_from_region`).

    Args:
        region_mask: ``(*S)`` mask (non-zero inside the region).
        inside_h2, outside_h2: ``N`` non-negative squared weights (each with a positive sum).
        smooth_sigma_voxels: mask smoothing in voxels; default ``SYNTH2D_WEIGHT_SMOOTH_SIGMA``
            times ``(max(S) - 1)``; 0 for a sharp boundary.

    Returns:
        ``(N, *S)`` float32 pre-weights.
    """
    mask = np.asarray(region_mask) != 0
    if smooth_sigma_voxels is None:
        smooth_sigma_voxels = SYNTH2D_WEIGHT_SMOOTH_SIGMA * (max(mask.shape) - 1)
    m = np.clip(gaussian_smooth_np(mask.astype(np.float64), float(smooth_sigma_voxels)), 0, 1)
    h = pre_weights_from_region(torch.from_numpy(m)[None, None], inside_h2, outside_h2)
    return h[0].numpy().astype(np.float32)


def synth2d_pre_weights(pair: Synth2DPair) -> np.ndarray:
    """Ground-truth pre-weights ``(4, X, Y)`` of a pair on its source grid (paper defaults)."""
    return predefined_pre_weights(pair.source_region, SYNTH2D_INSIDE_H2, SYNTH2D_OUTSIDE_H2)


def pair_seed(seed: int, index: int) -> int:
    """Seed of pair ``index`` in a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def write_synth2d(
    out_dir: str | Path,
    num_pairs: int = 40,
    seed: int = 2018,
    size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``num_pairs`` pairs as 2D NIfTI (identity affine) and ``pairs.csv``.

    Files per pair ``i``: ``pair_{i:03d}_source.nii.gz``, ``_target``, ``_source_label``,
    ``_target_label``, ``_source_region``. CSV columns :data:`SYNTH2D_COLUMNS`, paths relative to
    the CSV's folder. ``progress(done, total)`` is called after each pair.

    Raises:
        DatasetDirError: ``out_dir`` is a file or a non-empty folder without ``pairs.csv``.

    Returns:
        Path of the CSV.
    """
    if int(num_pairs) < 1:
        raise ValueError(f"num_pairs must be >= 1; got {num_pairs}")
    out = prepare_output_dir(out_dir, SYNTH2D_CSV)
    rows = []
    for i in range(int(num_pairs)):
        pair = generate_synth2d_pair(pair_seed(seed, i), size)
        names = {col: f"pair_{i:03d}_{col}.nii.gz" for col in SYNTH2D_COLUMNS}
        for col, name in names.items():
            save_nifti(out / name, getattr(pair, col))
        rows.append(names)
        if progress is not None:
            progress(i + 1, int(num_pairs))
    csv_path = out / SYNTH2D_CSV
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SYNTH2D_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
