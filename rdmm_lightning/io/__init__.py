"""Reading images in physical space and writing ITK-compatible registration outputs.

Conventions: ``Volume.affine`` maps voxel indices to world RAS mm (nibabel); ITK files and
displacement fields on disk are LPS (ITK). See :mod:`rdmm_lightning.io.volume` and
:mod:`rdmm_lightning.io.itk_fields`; index / world / domain coordinates of a grid are
:mod:`rdmm_lightning.grid`.
"""

from .itk_fields import (
    NIFTI_INTENT_VECTOR,
    displacement_from_map,
    map_from_displacement,
    read_displacement,
    warp_points,
    write_displacement,
    write_volume,
)
from .volume import Volume, affine_from_itk, itk_from_affine, read_image, read_label_map

__all__ = [
    "NIFTI_INTENT_VECTOR",
    "Volume",
    "affine_from_itk",
    "displacement_from_map",
    "itk_from_affine",
    "map_from_displacement",
    "read_displacement",
    "read_image",
    "read_label_map",
    "warp_points",
    "write_displacement",
    "write_volume",
]
