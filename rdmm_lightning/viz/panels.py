"""Pure numpy pieces of figure panels: intensity windows, checkerboards, label edges and the
levels of a deformation grid (no matplotlib here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["checkerboard", "grid_levels", "intensity_window", "label_edges", "rescale"]

_MAX_SAMPLES = 1 << 20


def intensity_window(x: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple:
    """Display range ``(lo, hi)`` of an image ``(*S)``: its ``percentiles`` (a regular subsample
    of at most about a million voxels for large volumes); ``hi > lo`` always."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    flat = flat[:: max(1, flat.size // _MAX_SAMPLES)]
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def rescale(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``x`` mapped linearly from ``window`` to [0, 1] and clipped."""
    lo, hi = window
    return np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def checkerboard(a: np.ndarray, b: np.ndarray, tile: Sequence[int]) -> np.ndarray:
    """Tiles of ``a`` and ``b`` ``(H, W)`` alternating: ``a`` where
    ``r // tile[0] + c // tile[1]`` is even, ``b`` where it is odd (the top-left tile is ``a``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"checkerboard needs two images of one 2D shape; got {a.shape}, {b.shape}")
    tr, tc = (max(1, int(t)) for t in tile)
    r = np.arange(a.shape[0])[:, None] // tr
    c = np.arange(a.shape[1])[None, :] // tc
    return np.where((r + c) % 2 == 0, a, b)


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Boundaries of the labelled regions of a label image ``(H, W)``: the pixel edges between
    two pixels of different labels (one of them non-zero) and the image border of non-zero
    pixels, as segments ``(N, 2, 2)`` of ``(x, y) = (column, row)`` end points (pixel centres at
    integers, as ``imshow`` draws them)."""
    lab = np.pad(np.asarray(labels), 1)  # background border: regions touching the edge close
    segments = []
    # vertical edges: between columns c and c + 1 of the padded image
    diff = (lab[:, :-1] != lab[:, 1:]) & ((lab[:, :-1] != 0) | (lab[:, 1:] != 0))
    r, c = np.nonzero(diff)
    x = c - 0.5  # padded column c + 0.5, minus the pad
    y = r - 1.0
    segments.append(np.stack([np.stack([x, y - 0.5], -1), np.stack([x, y + 0.5], -1)], 1))
    diff = (lab[:-1, :] != lab[1:, :]) & ((lab[:-1, :] != 0) | (lab[1:, :] != 0))
    r, c = np.nonzero(diff)
    x = c - 1.0
    y = r - 0.5
    segments.append(np.stack([np.stack([x - 0.5, y], -1), np.stack([x + 0.5, y], -1)], 1))
    return np.concatenate(segments).astype(np.float64)


def grid_levels(values: np.ndarray, centre: float, step: float, margin: float = 0.5) -> np.ndarray:
    """The levels ``centre + k * step`` (integer ``k``) at least ``margin`` inside the range of
    ``values``: where the lines of a deformation grid go (symmetric about ``centre``, so a
    flipped axis gives the same lines; the margin keeps ragged lines off the image border)."""
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0 or step <= 0:
        return np.empty(0)
    k_lo = np.ceil((finite.min() + margin - centre) / step)
    k_hi = np.floor((finite.max() - margin - centre) / step)
    return centre + step * np.arange(k_lo, k_hi + 1)
