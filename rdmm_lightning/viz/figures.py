"""Matplotlib figures of registrations and shootings (no pyplot: safe in workers and threads).

All functions take batch-free tensors on any device; 3D volumes are shown on their central slice
along ``axis`` (0 by default). Images are shown with axis 0 vertical and axis 1 horizontal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from ..metrics.jacobian import jacobian_determinant
from ..ops.grid import domain_spacing
from ..ops.warp import warp_image
from .slices import central_slice

__all__ = [
    "figure_to_array",
    "grid_image",
    "registration_figure",
    "save_figure",
    "shooting_figure",
]


def grid_image(shape: Sequence[int], step: int = 8, dtype=torch.float32, device=None) -> Tensor:
    """An image ``(1, 1, *S)`` of grid lines every ``step`` voxels along each in-plane axis
    (for 3D: lines along all axes, so every slice shows a grid)."""
    shape = tuple(int(n) for n in shape)
    img = torch.zeros((1, 1) + shape, dtype=dtype, device=device)
    for axis, n in enumerate(shape):
        idx = torch.arange(0, n, max(1, step), device=device)
        view = img.movedim(axis + 2, 2)
        view[:, :, idx] = 1.0
    return img


def _show(ax, arr: np.ndarray, title: str, **kwargs) -> None:
    im = ax.imshow(arr, origin="upper", interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _image_panel(x: Tensor, axis: int) -> np.ndarray:
    """First channel of ``x: (C, *S)`` on the central slice."""
    return central_slice(x[0], axis)


def registration_figure(
    source: Tensor,
    target: Tensor,
    warped: Tensor,
    phi_inv: Tensor,
    spacing: Sequence[float] | None = None,
    *,
    sigma: Tensor | None = None,
    sigma_range: tuple[float, float] | None = None,
    axis: int = 0,
    grid_step: int = 8,
    title: str | None = None,
) -> Figure:
    """Source, target, warped source, deformation grid, det J of ``phi^{-1}`` and (optionally)
    sigma(x) side by side.

    ``source, target, warped: (C, *S)``; ``phi_inv: (D, *S)`` pull-back map on the target grid;
    ``sigma: (1, *S)`` local regularizer std (domain units), shown on the fixed colour range
    ``sigma_range`` (e.g. the smallest and largest Gaussian std of the model, so figures of
    different epochs and pairs compare; default: the map's own range). The grid panel is a line
    image warped by ``phi^{-1}``: the source's grid lines as they land in the target.
    """
    spacing = domain_spacing(phi_inv.shape[1:]) if spacing is None else tuple(spacing)
    phi = phi_inv.detach().float().unsqueeze(0)
    sp = tuple(float(h) for h in spacing)
    with torch.no_grad():
        det = jacobian_determinant(phi, sp)[0]
        src_shape = source.shape[1:]
        src_sp = domain_spacing(src_shape) if tuple(src_shape) != tuple(phi.shape[2:]) else sp
        lines = warp_image(grid_image(src_shape, grid_step, device=phi.device), phi, src_sp)[0, 0]
    panels = 6 if sigma is not None else 5
    fig = Figure(figsize=(2.6 * panels, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    vmax = float(max(source.detach().max(), target.detach().max(), 1e-6))
    _show(axes[0], _image_panel(source, axis), "source", cmap="gray", vmin=0, vmax=vmax)
    _show(axes[1], _image_panel(target, axis), "target", cmap="gray", vmin=0, vmax=vmax)
    _show(axes[2], _image_panel(warped, axis), "warped source", cmap="gray", vmin=0, vmax=vmax)
    _show(axes[3], central_slice(lines, axis), "deformation grid", cmap="gray_r", vmin=0, vmax=1)
    det_np = central_slice(det, axis)
    lo, hi = min(float(det_np.min()), 0.99), max(float(det_np.max()), 1.01)
    negative = int((det <= 0).sum())
    im = _show(
        axes[4],
        det_np,
        f"det J ({negative} voxels <= 0)",
        cmap="RdBu_r",
        norm=TwoSlopeNorm(vcenter=1.0, vmin=min(lo, 0.0), vmax=max(hi, 2.0)),
    )
    fig.colorbar(im, ax=axes[4], fraction=0.046, pad=0.02)
    if sigma is not None:
        s = central_slice(sigma.detach()[0], axis)
        lo, hi = sigma_range if sigma_range is not None else (None, None)
        im = _show(axes[5], s, "sigma(x)", cmap="viridis", vmin=lo, vmax=hi)
        fig.colorbar(im, ax=axes[5], fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def shooting_figure(
    rows: Sequence[tuple[str, Tensor, Tensor, Tensor | None]],
    image: Tensor,
    spacing: Sequence[float],
    *,
    axis: int = 0,
    grid_step: int = 8,
    title: str | None = None,
    sigma_range: tuple[float, float] | None = None,
) -> Figure:
    """One row per shooting: ``(name, phi_inv (D, *S), det (*S) or None -> computed,
    sigma (1, *S) or None)``; columns: warped image, deformation grid, det J, sigma(x) (on the
    colour range ``sigma_range`` when given)."""
    fig = Figure(figsize=(11, 2.8 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), 4))
    sp = tuple(float(h) for h in spacing)
    for r, (name, phi_inv, det, sigma) in enumerate(rows):
        phi = phi_inv.detach().float().unsqueeze(0)
        with torch.no_grad():
            warped = warp_image(image.detach().float().unsqueeze(0), phi, sp)[0, 0]
            lines = warp_image(grid_image(phi.shape[2:], grid_step, device=phi.device), phi, sp)
            det = jacobian_determinant(phi, sp)[0] if det is None else det
        _show(axes[r, 0], central_slice(warped, axis), f"{name}: warped", cmap="gray")
        _show(axes[r, 1], central_slice(lines[0, 0], axis), "deformation grid", cmap="gray_r")
        det_np = central_slice(det, axis)
        im = _show(
            axes[r, 2],
            det_np,
            f"det J (min {det_np.min():.2f})",
            cmap="RdBu_r",
            norm=TwoSlopeNorm(vcenter=1.0, vmin=min(float(det_np.min()), 0.0), vmax=2.0),
        )
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046, pad=0.02)
        if sigma is None:
            axes[r, 3].axis("off")
        else:
            lo, hi = sigma_range if sigma_range is not None else (None, None)
            sig = central_slice(sigma.detach()[0], axis)
            im = _show(axes[r, 3], sig, "sigma(x)", vmin=lo, vmax=hi)
            fig.colorbar(im, ax=axes[r, 3], fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """RGB uint8 array ``(H, W, 3)`` of a figure (for wandb / TensorBoard image logging)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> str:
    """Write ``fig`` as PNG atomically (temporary file in the same folder, then rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
