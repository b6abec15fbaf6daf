"""Reading a source/target pair into one working grid in the target's physical space.

The *working grid* is the target's grid, or (for networks with a fixed input size) a grid of
``working_shape`` over the target's field of view (corners aligned, see
:func:`rdmm_lightning.io.resampled_affine`), or the target's grid put through a network's training
preprocessing (:class:`~rdmm_lightning.io.training_grid.TrainingGrid`: e.g. reoriented to RAS+
and resized, as the network saw its training volumes). The source is resampled into it through world
coordinates, so source and target may differ in shape, spacing and orientation. Intensities are
normalised to [0, 1] for the registration only; the written outputs use the original values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..io import Volume, read_image, read_label_map, resample_volume, resampled_affine
from ..io.training_grid import TrainingGrid
from ..ops.grid import domain_spacing
from .physical import grid_world, sample_volume

__all__ = [
    "NORMALIZE_MODES",
    "SPACING_MODES",
    "PreparedPair",
    "normalize_intensities",
    "prepare_pair",
]

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("percentile", "minmax", "none")
SPACING_MODES = ("parity", "physical")
PERCENTILES = (0.5, 99.5)

VolumeLike = str | os.PathLike | Volume


@dataclass
class PreparedPair:
    """A source/target pair on a working grid, plus what is needed to write outputs.

    Attributes:
        source: ``(1, 1, *S_w)`` normalised source resampled into the working grid.
        target: ``(1, 1, *S_w)`` normalised target on the working grid.
        spacing: domain spacing of the working grid (``spacing_mode``).
        spacing_mode: ``"parity"`` or ``"physical"``
            (:func:`rdmm_lightning.ops.grid.domain_spacing`).
        working_affine: ``(4, 4)`` voxel index -> RAS mm of the working grid.
        source_volume, target_volume: the images as read (original grids and intensities).
        source_label, target_label: ``(1, 1, *S_w)`` int64 label maps on the working grid
            (nearest neighbour), or None.
        source_label_volume, target_label_volume: the label maps as read, or None.
        overlap: fraction of working-grid voxels that lie inside the source's field of view.
    """

    source: Tensor
    target: Tensor
    spacing: tuple[float, ...]
    spacing_mode: str
    working_affine: np.ndarray
    source_volume: Volume
    target_volume: Volume
    source_label: Tensor | None = None
    target_label: Tensor | None = None
    source_label_volume: Volume | None = None
    target_label_volume: Volume | None = None
    overlap: float = 1.0

    @property
    def dim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.target_volume.dim

    @property
    def working_shape(self) -> tuple[int, ...]:
        """Spatial shape of the working grid."""
        return tuple(self.target.shape[2:])

    def to(self, device: torch.device | str) -> PreparedPair:
        """The working-grid tensors moved to ``device`` (the volumes stay where they are)."""
        moved = {
            name: getattr(self, name).to(device) if getattr(self, name) is not None else None
            for name in ("source", "target", "source_label", "target_label")
        }
        return PreparedPair(
            spacing=self.spacing,
            spacing_mode=self.spacing_mode,
            working_affine=self.working_affine,
            source_volume=self.source_volume,
            target_volume=self.target_volume,
            source_label_volume=self.source_label_volume,
            target_label_volume=self.target_label_volume,
            overlap=self.overlap,
            **moved,
        )


def normalize_intensities(
    data: Tensor, mode: str = "percentile", name: str = "image"
) -> tuple[Tensor, tuple[float, float]]:
    """Rescale intensities to [0, 1]: ``(x - lo) / (hi - lo)`` clipped.

    ``"percentile"``: ``lo, hi`` = 0.5th and 99.5th percentiles (min/max if they coincide);
    ``"minmax"``: min and max; ``"none"``: unchanged. Returns the image and ``(lo, hi)``.
    Raises ValueError (naming ``name``) for a constant image.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {mode!r}")
    if mode == "none":
        return data, (0.0, 1.0)
    arr = data.detach().cpu().double().numpy().ravel()
    vmin, vmax = float(arr.min()), float(arr.max())
    if vmax <= vmin:
        raise ValueError(f"{name}: image is constant (all voxels = {vmin:g})")
    lo, hi = vmin, vmax
    if mode == "percentile":
        plo, phi = (float(v) for v in np.percentile(arr, PERCENTILES))
        if phi > plo:
            lo, hi = plo, phi
    out = ((data - lo) / (hi - lo)).clamp_(0.0, 1.0)
    return out, (lo, hi)


def _read(item: VolumeLike, labels: bool, reference: Volume | None = None) -> Volume:
    if isinstance(item, Volume):
        return item
    return read_label_map(item, reference) if labels else read_image(item)


def _name(vol: Volume, fallback: str) -> str:
    return vol.path or fallback


def _working_grid(
    target: Volume, working_shape: Sequence[int] | None, training_grid: TrainingGrid | None
) -> tuple[tuple[int, ...], np.ndarray]:
    name = _name(target, "target")
    shape, affine = target.shape, target.affine
    if training_grid is not None:
        try:
            shape, affine = training_grid.apply(target.shape, target.affine)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if working_shape is None:
        return shape, affine
    wanted = tuple(int(n) for n in working_shape)
    if len(wanted) != target.dim or min(wanted) < 2:
        raise ValueError(
            f"working_shape must have {target.dim} entries >= 2 for the "
            f"{target.dim}D target {name}; got {tuple(working_shape)}"
        )
    if training_grid is not None and shape != wanted:
        raise ValueError(
            f"{name}: the training preprocessing gives a {shape} grid for this image, but the "
            f"network was trained on {wanted} (set resize_shape or crop_or_pad_shape in the "
            "training data config)"
        )
    if shape == wanted:
        return shape, affine
    return wanted, resampled_affine(affine, shape, wanted)


def _on_working_grid(
    target: Volume, shape: tuple[int, ...], affine: np.ndarray, world: Tensor, labels: bool
) -> Tensor:
    """Target image or label map ``(1, 1, *S_w)`` on the working grid: as is on its own grid,
    resized over the same field of view, or sampled at the working grid's world points."""
    if shape == target.shape and np.allclose(affine, target.affine):
        return target.batch()
    if np.allclose(affine, resampled_affine(target.affine, target.shape, shape)):
        return resample_volume(target, shape, nearest=labels).batch()
    return sample_volume(target, world, labels=labels)


def _overlap(source: Volume, world: Tensor) -> float:
    ones = Volume(torch.ones_like(source.data), source.affine)
    return float(sample_volume(ones, world, dtype=torch.float64).mean())


def prepare_pair(
    source_path: VolumeLike,
    target_path: VolumeLike,
    *,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    working_shape: Sequence[int] | None = None,
    working_spacing_mode: str = "parity",
    normalize: str = "percentile",
    training_grid: TrainingGrid | None = None,
) -> PreparedPair:
    """Read, validate and resample a pair into the target's physical space.

    Args:
        source_path, target_path: image files (NIfTI, NRRD, MHA, ...) or :class:`Volume` s.
        source_label, target_label: integer label maps on the grid of their image, or None.
        working_shape: working grid size (default: the target's grid).
        working_spacing_mode: domain spacing of the working grid, ``"parity"`` (each axis spans
            [0, 1]) or ``"physical"`` (aspect ratios of the working voxels kept).
        normalize: ``"percentile"``, ``"minmax"`` or ``"none"`` (:func:`normalize_intensities`).
        training_grid: the spatial preprocessing a network was trained with
            (:class:`~rdmm_lightning.io.training_grid.TrainingGrid`): the working grid is then
            the target's grid put through it (e.g. reoriented to RAS+ and resized), and must
            have ``working_shape``.

    Raises:
        ValueError: one line starting with the offending file: missing/unreadable file, NaN,
            wrong number of dims, 2D/3D mismatch, non-integer label map, label map not on its
            image's grid, constant image, or no overlap of source and target in physical space.
    """
    if working_spacing_mode not in SPACING_MODES:
        raise ValueError(
            f"working_spacing_mode must be one of {', '.join(SPACING_MODES)}; "
            f"got {working_spacing_mode!r}"
        )
    if normalize not in NORMALIZE_MODES:
        raise ValueError(
            f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {normalize!r}"
        )
    source = _read(source_path, False)
    target = _read(target_path, False)
    src_name, tgt_name = _name(source, "source"), _name(target, "target")
    if source.dim != target.dim:
        raise ValueError(
            f"{src_name}: {source.dim}D image, but the target {tgt_name} is {target.dim}D"
        )
    src_lab = None if source_label is None else _read(source_label, True, source)
    tgt_lab = None if target_label is None else _read(target_label, True, target)
    for lab, img in ((src_lab, source), (tgt_lab, target)):
        if lab is not None and (lab.shape != img.shape or lab.dim != img.dim):
            raise ValueError(
                f"{_name(lab, 'label map')}: shape {lab.shape} differs from its image "
                f"{_name(img, 'image')} {img.shape}"
            )

    shape, affine = _working_grid(target, working_shape, training_grid)
    world = grid_world(shape, affine)
    overlap = _overlap(source, world)
    if overlap <= 0.0:
        raise ValueError(
            f"{src_name}: does not overlap the target {tgt_name} in physical space "
            "(check the headers' origins and orientations)"
        )
    if overlap < 0.25:
        log.warning("%s covers only %.0f%% of the target's field of view", src_name, 100 * overlap)

    src_norm, _ = normalize_intensities(source.data, normalize, src_name)
    tgt_norm, _ = normalize_intensities(target.data, normalize, tgt_name)
    src_work = sample_volume(Volume(src_norm, source.affine), world)
    tgt_work = _on_working_grid(Volume(tgt_norm, target.affine), shape, affine, world, False)
    src_lab_work = None if src_lab is None else sample_volume(src_lab, world, labels=True)
    tgt_lab_work = (
        None if tgt_lab is None else _on_working_grid(tgt_lab, shape, affine, world, True)
    )
    spacing = domain_spacing(shape, working_spacing_mode, _axis_lengths(affine, len(shape)))
    return PreparedPair(
        source=src_work.float().contiguous(),
        target=tgt_work.float().contiguous(),
        spacing=spacing,
        spacing_mode=working_spacing_mode,
        working_affine=affine,
        source_volume=source,
        target_volume=target,
        source_label=src_lab_work,
        target_label=tgt_lab_work,
        source_label_volume=src_lab,
        target_label_volume=tgt_lab,
        overlap=overlap,
    )


def _axis_lengths(affine: np.ndarray, dim: int) -> tuple[float, ...]:
    """Physical voxel size along each axis of a grid (column norms of the affine)."""
    return tuple(float(np.linalg.norm(affine[:3, d])) for d in range(dim))
