"""Reading a source/target pair into one working grid in the target's physical space (the
*prepare* stage of :mod:`rdmm_lightning.pipeline.run`).

The *working grid* (a :class:`~rdmm_lightning.grid.Grid`) is the target's grid, or (for networks
with a fixed input size) a grid of ``working_shape`` over the target's field of view (corners
aligned, :meth:`~rdmm_lightning.grid.Grid.resize`). The source is resampled into it through world
coordinates, so source and target may differ in shape, voxel size and orientation. Intensities are
normalised to [0, 1] for the registration only; the written outputs use the original values
(:func:`prepare_pair`).

A network trained by a data module sees its inputs as that data module's preprocessing record
(:class:`~rdmm_lightning.io.preprocessing.PreprocessingConfig`) made them: both images go through
the very same TorchIO steps (e.g. reoriented to RAS+, resized, intensities rescaled between
percentiles), the target's result is the working grid, and the preprocessed source is resampled
into it (:func:`prepare_preprocessed_pair`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..grid import Grid
from ..io import Volume, read_image, read_label_map
from ..io.preprocessing import PreprocessingConfig
from ..options import IntensityNormalization, SpacingMode, values
from .physical import sample_volume

__all__ = [
    "NORMALIZE_MODES",
    "SPACING_MODES",
    "PairVolumes",
    "PreparedPair",
    "normalize_intensities",
    "prepare_pair",
    "prepare_preprocessed_pair",
    "read_pair",
]

log = logging.getLogger(__name__)

NORMALIZE_MODES = values(IntensityNormalization)
SPACING_MODES = values(SpacingMode)
PERCENTILES = (0.5, 99.5)

VolumeLike = str | os.PathLike | Volume


@dataclass
class PreparedPair:
    """A source/target pair on a working grid, plus what is needed to write outputs.

    Attributes:
        source: ``(1, 1, *S_w)`` normalised source resampled into the working grid.
        target: ``(1, 1, *S_w)`` normalised target on the working grid.
        grid: the working grid (shape ``S_w``, affine, domain spacing of its spacing mode).
        source_volume, target_volume: the images as read (original grids and intensities).
        source_label, target_label: ``(1, 1, *S_w)`` int64 label maps on the working grid
            (nearest neighbour), or None.
        source_label_volume, target_label_volume: the label maps as read, or None.
        overlap: fraction of working-grid voxels that lie inside the source's field of view.
    """

    source: Tensor
    target: Tensor
    grid: Grid
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
        return self.grid.shape

    @property
    def working_affine(self) -> np.ndarray:
        """``(4, 4)`` voxel index -> RAS mm of the working grid."""
        return self.grid.affine

    @property
    def domain_spacing(self) -> tuple[float, ...]:
        """Domain spacing of the working grid (what the registration's maps use)."""
        return self.grid.domain_spacing

    @property
    def spacing_mode(self) -> str:
        """``"parity"`` or ``"physical"`` (:func:`rdmm_lightning.ops.grid.domain_spacing`)."""
        return str(self.grid.spacing_mode)

    def to(self, device: torch.device | str) -> PreparedPair:
        """The working-grid tensors moved to ``device`` (the volumes stay where they are)."""
        moved = {
            name: getattr(self, name).to(device) if getattr(self, name) is not None else None
            for name in ("source", "target", "source_label", "target_label")
        }
        return PreparedPair(
            grid=self.grid,
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


def _working_grid(target: Volume, working_shape: Sequence[int] | None, spacing_mode: str) -> Grid:
    """The target's grid, or ``working_shape`` voxels over its field of view."""
    grid = target.grid(spacing_mode)
    if working_shape is None:
        return grid
    wanted = tuple(int(n) for n in working_shape)
    if len(wanted) != target.dim or min(wanted) < 2:
        raise ValueError(
            f"working_shape must have {target.dim} entries >= 2 for the "
            f"{target.dim}D target {_name(target, 'target')}; got {tuple(working_shape)}"
        )
    return grid if wanted == grid.shape else grid.resize(wanted)


def _on_working_grid(target: Volume, grid: Grid, world: Tensor, labels: bool) -> Tensor:
    """Target image or label map ``(1, 1, *S_w)`` on the working grid: as is on its own grid,
    resized over the same field of view, or sampled at the working grid's world points."""
    own = target.grid()
    if own.same_as(grid):
        return target.batch()
    if own.resize(grid.shape).same_as(grid):
        return target.resize(grid.shape, nearest=labels).batch()
    return sample_volume(target, world, labels=labels)


def _overlap(source: Volume, world: Tensor) -> float:
    ones = Volume(torch.ones_like(source.data), source.affine)
    return float(sample_volume(ones, world, dtype=torch.float64).mean())


class PairVolumes(NamedTuple):
    """A pair as read: images and label maps on their own grids (labels may be None)."""

    source: Volume
    target: Volume
    source_label: Volume | None
    target_label: Volume | None


def read_pair(
    source: VolumeLike,
    target: VolumeLike,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
) -> PairVolumes:
    """Read (files) or take (:class:`Volume` s) a pair and its label maps, and check them.

    Raises:
        ValueError: one line starting with the offending file: missing/unreadable file, NaN,
            wrong number of dims, 2D/3D mismatch, non-integer label map, or a label map not on
            its image's grid.
    """
    src, tgt = _read(source, False), _read(target, False)
    if src.dim != tgt.dim:
        raise ValueError(
            f"{_name(src, 'source')}: {src.dim}D image, but the target "
            f"{_name(tgt, 'target')} is {tgt.dim}D"
        )
    src_lab = None if source_label is None else _read(source_label, True, src)
    tgt_lab = None if target_label is None else _read(target_label, True, tgt)
    for lab, img in ((src_lab, src), (tgt_lab, tgt)):
        if lab is not None and (lab.shape != img.shape or lab.dim != img.dim):
            raise ValueError(
                f"{_name(lab, 'label map')}: shape {lab.shape} differs from its image "
                f"{_name(img, 'image')} {img.shape}"
            )
    return PairVolumes(src, tgt, src_lab, tgt_lab)


def _check_spacing_mode(mode: str) -> None:
    if mode not in SPACING_MODES:
        raise ValueError(
            f"working_spacing_mode must be one of {', '.join(SPACING_MODES)}; got {mode!r}"
        )


def _world_and_overlap(vols: PairVolumes, grid: Grid) -> tuple[Tensor, float]:
    """World points ``(1, D, *S_w)`` of the working grid and the fraction of them inside the
    source's field of view (ValueError when none is)."""
    world = grid.world_points()
    overlap = _overlap(vols.source, world)
    src_name, tgt_name = _name(vols.source, "source"), _name(vols.target, "target")
    if overlap <= 0.0:
        raise ValueError(
            f"{src_name}: does not overlap the target {tgt_name} in physical space "
            "(check the headers' origins and orientations)"
        )
    if overlap < 0.25:
        log.warning("%s covers only %.0f%% of the target's field of view", src_name, 100 * overlap)
    return world, overlap


def _assemble(
    vols: PairVolumes,
    grid: Grid,
    world_and_overlap: tuple[Tensor, float],
    source_image: Volume,
    target_image: Volume,
) -> PreparedPair:
    """The images (already scaled for the registration, on any grid of their physical space)
    and the label maps as read, put on the working ``grid`` (with its world points and the
    source's overlap, :func:`_world_and_overlap`)."""
    world, overlap = world_and_overlap
    src_lab, tgt_lab = vols.source_label, vols.target_label
    src_work = sample_volume(source_image, world)
    tgt_work = _on_working_grid(target_image, grid, world, False)
    src_lab_work = None if src_lab is None else sample_volume(src_lab, world, labels=True)
    tgt_lab_work = None if tgt_lab is None else _on_working_grid(tgt_lab, grid, world, True)
    return PreparedPair(
        source=src_work.float().contiguous(),
        target=tgt_work.float().contiguous(),
        grid=grid,
        source_volume=vols.source,
        target_volume=vols.target,
        source_label=src_lab_work,
        target_label=tgt_lab_work,
        source_label_volume=src_lab,
        target_label_volume=tgt_lab,
        overlap=overlap,
    )


def prepare_pair(
    source_path: VolumeLike,
    target_path: VolumeLike,
    *,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    working_shape: Sequence[int] | None = None,
    working_spacing_mode: str = "parity",
    normalize: str = "percentile",
) -> PreparedPair:
    """Read, validate and resample a pair into the target's physical space.

    Args:
        source_path, target_path: image files (NIfTI, NRRD, MHA, ...) or :class:`Volume` s.
        source_label, target_label: integer label maps on the grid of their image, or None.
        working_shape: working grid size (default: the target's grid).
        working_spacing_mode: domain spacing of the working grid, ``"parity"`` (each axis spans
            [0, 1]) or ``"physical"`` (aspect ratios of the working voxels kept).
        normalize: ``"percentile"``, ``"minmax"`` or ``"none"`` (:func:`normalize_intensities`),
            applied to each image on its own grid.

    Raises:
        ValueError: one line starting with the offending file: the errors of
            :func:`read_pair`, a constant image, or no overlap of source and target in physical
            space.
    """
    _check_spacing_mode(working_spacing_mode)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(
            f"normalize must be one of {', '.join(NORMALIZE_MODES)}; got {normalize!r}"
        )
    vols = read_pair(source_path, target_path, source_label, target_label)
    source, target = vols.source, vols.target
    grid = _working_grid(target, working_shape, working_spacing_mode)
    world_and_overlap = _world_and_overlap(vols, grid)
    src_norm, _ = normalize_intensities(source.data, normalize, _name(source, "source"))
    tgt_norm, _ = normalize_intensities(target.data, normalize, _name(target, "target"))
    src_image, tgt_image = Volume(src_norm, source.affine), Volume(tgt_norm, target.affine)
    return _assemble(vols, grid, world_and_overlap, src_image, tgt_image)


def prepare_preprocessed_pair(
    source_path: VolumeLike,
    target_path: VolumeLike,
    preprocessing: PreprocessingConfig,
    *,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    working_shape: Sequence[int] | None = None,
    working_spacing_mode: str = "parity",
) -> PreparedPair:
    """A pair as a network trained with ``preprocessing`` sees it (see the module docstring).

    Both images go through :meth:`PreprocessingConfig.apply` (spatial and intensity steps, as
    in the data module); the working grid is the preprocessed target's grid, and the
    preprocessed source is resampled into it in physical space (for a source on the target's
    grid this reproduces the data module's source exactly). Label maps are sampled from the
    files as read (nearest neighbour); the volumes as read are kept for the outputs.

    Args:
        source_path, target_path, source_label, target_label: as for :func:`prepare_pair`.
        preprocessing: the data module's record (e.g. ``module.preprocessing`` of a loaded
            checkpoint).
        working_shape: the grid the network was trained on; the preprocessed target must have
            this shape.
        working_spacing_mode: as for :func:`prepare_pair`.

    Raises:
        ValueError: one line naming the file: the errors of :func:`read_pair`, a grid the
            preprocessing cannot produce from it, a shape other than ``working_shape``, or no
            overlap of source and target.
    """
    _check_spacing_mode(working_spacing_mode)
    vols = read_pair(source_path, target_path, source_label, target_label)
    images = []
    for vol, fallback in ((vols.source, "source"), (vols.target, "target")):
        try:
            images.append(preprocessing.apply(vol))
        except ValueError as exc:
            raise ValueError(f"{_name(vol, fallback)}: {exc}") from None
    src_image, tgt_image = images
    grid = tgt_image.grid(working_spacing_mode)
    if working_shape is not None and grid.shape != tuple(int(n) for n in working_shape):
        raise ValueError(
            f"{_name(vols.target, 'target')}: the training preprocessing gives a {grid.shape} "
            f"grid for this image, but the network was trained on {tuple(working_shape)} (set "
            "resize_shape or crop_or_pad_shape in the training data config)"
        )
    return _assemble(vols, grid, _world_and_overlap(vols, grid), src_image, tgt_image)
