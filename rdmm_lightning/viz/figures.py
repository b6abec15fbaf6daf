"""Matplotlib figures of shootings, and writing figures out (no pyplot: safe in workers and
threads). The registration overview is :func:`rdmm_lightning.viz.registration.registration_figure`.

:func:`shooting_figure` takes batch-free tensors on any device and shows central slices along
``axis`` in voxel order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from torch import Tensor

from ..metrics.jacobian import jacobian_determinant
from ..ops.warp import warp_image
from .slices import central_slice

__all__ = [
    "figure_to_array",
    "grid_image",
    "save_figure",
    "shooting_figure",
    "show_image",
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


def show_image(ax, arr: np.ndarray, title: str | None = None, **kwargs):
    """``imshow`` of ``arr (H, W)`` (row 0 at the top, no smoothing) without ticks."""
    im = ax.imshow(arr, origin="upper", interpolation="nearest", **kwargs)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


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
        show_image(axes[r, 0], central_slice(warped, axis), f"{name}: warped", cmap="gray")
        show_image(axes[r, 1], central_slice(lines[0, 0], axis), "deformation grid", cmap="gray_r")
        det_np = central_slice(det, axis)
        im = show_image(
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
            im = show_image(axes[r, 3], sig, "sigma(x)", vmin=lo, vmax=hi)
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
    """Write ``fig`` as PNG atomically (temporary file in the same folder, then rename), with the
    permissions of any file the process creates (``0o666`` less the umask)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}.png")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
