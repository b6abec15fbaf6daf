"""The registration figure (``overview.png``, validation figures): one row per plane (axial,
coronal, sagittal; the one plane in 2D), one column per panel, in the radiological layout of
:mod:`rdmm_lightning.viz.slices` when the volumes' world affines are given and in voxel order
otherwise (no pyplot: safe in workers and threads)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator
from torch import Tensor

from ..metrics.jacobian import jacobian_determinant
from ..ops.grid import domain_spacing
from .figures import show_image
from .panels import checkerboard, grid_levels, intensity_window, label_edges, rescale
from .slices import (
    Orientation,
    Plane,
    canonical_coordinates,
    plane_image,
    plane_spacing,
    view_planes,
)

__all__ = ["registration_figure"]

WARPED_LABEL_COLOUR = "#ff8c00"  # orange
TARGET_LABEL_COLOUR = "#00d5ff"  # cyan
FOLD_COLOUR = "#39ff14"  # green: det J <= 0
DET_RANGE = (0.25, 4.0)  # log scale, centred at 1

_CONVENTION = {
    (True, 3): "radiological view (RAS from the image affines): patient's right on the image "
    "left and superior up (axial, coronal), anterior left (sagittal)",
    (True, 2): "radiological view (RAS from the image affine): patient's right on the image left, "
    "anterior up",
    (False, 3): "voxel order (no affine): first in-plane array axis down, second to the right",
    (False, 2): "voxel order (no affine): array axis 0 down, axis 1 to the right",
}


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().to("cpu").numpy() if isinstance(x, Tensor) else np.asarray(x)


def _spatial(x: Tensor | np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``(*S)`` or the first channel of ``(C, *S)``, checked against the target's grid."""
    arr = _numpy(x)
    if arr.ndim == len(shape) + 1:
        arr = arr[0]
    if tuple(arr.shape) != shape:
        raise ValueError(f"{name} must lie on the target's grid {shape}; got {tuple(arr.shape)}")
    return arr


def _letters(ax, plane: Plane) -> None:
    """Anatomical directions at the panel's edges (radiological planes only)."""
    if plane.letters is None:
        return
    places = ((0.03, 0.5, "left", "center"), (0.97, 0.5, "right", "center"))
    places += ((0.5, 0.97, "center", "top"), (0.5, 0.03, "center", "bottom"))
    for letter, (x, y, ha, va) in zip(plane.letters, places):
        ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, fontsize=7, color="yellow")


def _label_lines(ax, labels: np.ndarray, colour: str) -> None:
    segments = label_edges(labels)
    if len(segments):
        ax.add_collection(LineCollection(segments, colors=colour, linewidths=0.6))


class _Panels:
    """The canonical volumes of one registration figure and how to draw each panel on a plane."""

    def __init__(self, orient: Orientation, grid_lines: int, tiles: int):
        self.orient, self.grid_lines, self.tiles = orient, grid_lines, tiles

    def aspect(self, plane: Plane, orient: Orientation | None = None) -> float:
        rows, cols = plane_spacing((orient or self.orient).voxel_size, plane)
        return rows / cols

    def image(self, ax, vol, plane: Plane, window, orient: Orientation | None = None) -> None:
        lo, hi = window
        img = plane_image(vol, plane)
        show_image(ax, img, cmap="gray", vmin=lo, vmax=hi, aspect=self.aspect(plane, orient))

    def checkerboard(self, ax, warped, target, plane: Plane, windows) -> None:
        a = rescale(plane_image(warped, plane), windows[0])
        b = rescale(plane_image(target, plane), windows[1])
        rows_mm, cols_mm = plane_spacing(self.orient.voxel_size, plane)
        tile_mm = max(a.shape[0] * rows_mm, a.shape[1] * cols_mm) / self.tiles
        tile = (round(tile_mm / rows_mm), round(tile_mm / cols_mm))
        board = checkerboard(a, b, tile)
        show_image(ax, board, cmap="gray", vmin=0, vmax=1, aspect=self.aspect(plane))

    def grid(self, ax, coords: list[np.ndarray], plane: Plane) -> None:
        """Lines of constant pull-back coordinate (canonical voxel indices ``coords``) every
        ``extent / grid_lines`` millimetres, symmetric about the grid's centre."""
        shape = coords[0].shape
        size = self.orient.voxel_size
        step_mm = max(n * h for n, h in zip(shape, size)) / self.grid_lines
        blank = np.ones_like(plane_image(coords[0], plane))
        show_image(ax, blank, cmap="gray", vmin=0, vmax=1, aspect=self.aspect(plane))
        for w in (plane.rows, plane.cols):
            values = plane_image(coords[w], plane)
            levels = grid_levels(values, (shape[w] - 1) / 2, step_mm / size[w])
            if len(levels):
                ax.contour(values, levels=levels, colors="black", linewidths=0.6)

    def labels(self, ax, target, window, plane: Plane, target_label, warped_label) -> None:
        self.image(ax, target, plane, window)
        if target_label is not None:
            _label_lines(ax, plane_image(target_label, plane), TARGET_LABEL_COLOUR)
        if warped_label is not None:
            _label_lines(ax, plane_image(warped_label, plane), WARPED_LABEL_COLOUR)


def registration_figure(
    source: Tensor,
    target: Tensor,
    warped: Tensor,
    phi_inv: Tensor,
    spacing: Sequence[float] | None = None,
    *,
    sigma: Tensor | None = None,
    sigma_range: tuple[float, float] | None = None,
    affine: np.ndarray | None = None,
    source_affine: np.ndarray | None = None,
    target_label: Tensor | None = None,
    warped_label: Tensor | None = None,
    det: Tensor | np.ndarray | None = None,
    grid_lines: int = 16,
    tiles: int = 8,
    title: str | None = None,
) -> Figure:
    """One row per plane (axial, coronal, sagittal in 3D; the one plane in 2D), one column per
    panel: source, target, warped source, label boundaries over the target (when labels are
    given), checkerboard of warped source and target, deformation grid, det J of ``phi^{-1}``
    and sigma(x) (when given).

    Args:
        source: ``(C, *S_s)``; the first channel is shown.
        target, warped: ``(C, *S)`` on the target's grid.
        phi_inv: ``(D, *S)`` pull-back map in the domain coordinates of ``spacing`` (default:
            :func:`~rdmm_lightning.ops.grid.domain_spacing` of ``S``).
        sigma: ``(1, *S)`` local regularizer std, on the colour range ``sigma_range`` (e.g. the
            model's smallest and largest Gaussian std, so figures compare; default: its range).
        affine, source_affine: ``(4, 4)`` voxel index -> world RAS mm of the target's grid (also
            of ``warped``, ``phi_inv``, labels, ``det``, ``sigma``) and of the source's
            (default: ``affine``): the planes are then shown in the radiological layout
            (:mod:`rdmm_lightning.viz.slices`); without ``affine`` in voxel order.
        target_label, warped_label: ``(*S)`` or ``(1, *S)`` integer label maps whose region
            boundaries are drawn over the target (cyan and orange).
        det: ``(*S)`` det J of ``phi^{-1}`` if already computed (default: computed from
            ``phi_inv``); shown on a log scale from 1/4 to 4 centred at 1, det J <= 0 in green.
        grid_lines: deformation grid lines across the largest extent of the target's grid.
        tiles: checkerboard tiles across the largest extent of a plane.
        title: first line of the figure title (the second names the orientation convention).
    """
    shape = tuple(int(n) for n in phi_inv.shape[1:])
    dim = len(shape)
    spacing = domain_spacing(shape) if spacing is None else tuple(float(h) for h in spacing)
    if affine is None and source_affine is not None:
        raise ValueError("registration_figure: source_affine needs the target's affine too")
    if source_affine is None and affine is not None and tuple(source.shape[1:]) != shape:
        raise ValueError(
            f"registration_figure: a source on another grid ({tuple(source.shape[1:])}) than "
            f"the target ({shape}) needs source_affine"
        )
    orient = Orientation.of(affine, dim)
    src_orient = Orientation.of(affine if source_affine is None else source_affine, dim)
    with torch.no_grad():
        phi = phi_inv.detach()
        if det is None:
            det = jacobian_determinant(phi.float().unsqueeze(0), spacing)[0]
        h = torch.tensor(spacing, dtype=phi.dtype, device=phi.device).view(dim, *([1] * dim))
        index_map = _numpy(phi / h)
    det_np = _spatial(det, shape, "det")
    src = src_orient.apply(_numpy(source)[0])
    tgt = orient.apply(_spatial(target, shape, "target"))
    wrp = orient.apply(_spatial(warped, shape, "warped"))
    windows = (intensity_window(src), intensity_window(tgt))
    coords = canonical_coordinates(index_map, orient.ornt)
    labs = [
        None if lab is None else orient.apply(_spatial(lab, shape, name))
        for lab, name in ((target_label, "target_label"), (warped_label, "warped_label"))
    ]
    panels = _Panels(orient, grid_lines, tiles)

    det_c = orient.apply(det_np)
    folds = int((det_np <= 0).sum())
    det_cmap = _det_colormap()
    det_norm = LogNorm(*DET_RANGE)

    def draw_det(ax, plane: Plane):
        d = plane_image(det_c, plane)
        masked = np.ma.masked_where(~(d > 0), d)
        return show_image(ax, masked, cmap=det_cmap, norm=det_norm, aspect=panels.aspect(plane))

    # (title, draw(ax, plane) -> mappable for a colour bar or None)
    columns: list[tuple[str, Callable]] = [
        ("source", lambda ax, pl: panels.image(ax, src, pl, windows[0], src_orient)),
        ("target", lambda ax, pl: panels.image(ax, tgt, pl, windows[1])),
        ("warped source", lambda ax, pl: panels.image(ax, wrp, pl, windows[0])),
    ]
    if any(lab is not None for lab in labs):
        shown = [n for n, lab in zip(("target cyan", "warped orange"), labs) if lab is not None]
        draw_labels = lambda ax, pl: panels.labels(ax, tgt, windows[1], pl, *labs)  # noqa: E731
        columns.append(("labels\n" + ", ".join(shown), draw_labels))
    draw_board = lambda ax, pl: panels.checkerboard(ax, wrp, tgt, pl, windows)  # noqa: E731
    columns.append(("checkerboard\nwarped / target", draw_board))
    columns.append(("deformation grid", lambda ax, pl: panels.grid(ax, coords, pl)))
    columns.append((f"det J\n{folds} voxels <= 0 (green)", draw_det))
    if sigma is not None:
        sig_c = orient.apply(_spatial(sigma, shape, "sigma"))
        lo, hi = (
            sigma_range if sigma_range is not None else (float(sig_c.min()), float(sig_c.max()))
        )

        def draw_sigma(ax, plane: Plane):
            img = plane_image(sig_c, plane)
            kwargs = dict(cmap="viridis", vmin=lo, vmax=hi, aspect=panels.aspect(plane))
            return show_image(ax, img, **kwargs)

        columns.append(("sigma(x)", draw_sigma))

    planes = view_planes(dim, orient.radiological)
    heading = (f"{title}\n" if title else "") + _CONVENTION[(orient.radiological, dim)]
    return _panel_grid(columns, planes, heading)


def _panel_grid(columns: list[tuple[str, Callable]], planes: Sequence[Plane], heading: str):
    """A figure of one row per plane and one column per ``(title, draw)``; a colour bar beside
    every column whose ``draw`` returns a mappable."""
    size = (1.9 * len(columns) + 0.9, 2.0 * len(planes) + 0.8)
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.array(fig.subplots(len(planes), len(columns), squeeze=False))
    bars: dict[int, object] = {}
    for r, plane in enumerate(planes):
        for c, (name, draw) in enumerate(columns):
            mappable = draw(axes[r, c], plane)
            if mappable is not None:
                bars[c] = mappable
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
        axes[r, 0].set_ylabel(plane.name, fontsize=9)
        _letters(axes[r, 0], plane)
    for c, mappable in bars.items():
        bar = fig.colorbar(mappable, ax=list(axes[:, c]), shrink=0.8)
        if isinstance(mappable.norm, LogNorm):  # det J
            bar.ax.yaxis.set_major_locator(FixedLocator([0.25, 0.5, 1.0, 2.0, 4.0]))
            bar.ax.yaxis.set_major_formatter(FixedFormatter(["1/4", "1/2", "1", "2", "4"]))
            bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(heading, fontsize=9)
    return fig


def _det_colormap():
    """Diverging blue (compression) - white (1) - red (expansion); det J <= 0 in green."""
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad=FOLD_COLOUR)
