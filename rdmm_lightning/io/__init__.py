"""Reading images in physical space and writing ITK-compatible registration outputs.

Conventions: ``Volume.affine`` maps voxel indices to world RAS mm (nibabel); ITK files and
displacement fields on disk are LPS (ITK). See :mod:`rdmm_lightning.io.volume`,
:mod:`rdmm_lightning.io.spatial` and :mod:`rdmm_lightning.io.outputs`.
"""

from .outputs import (
    NIFTI_INTENT_VECTOR,
    displacement_from_map,
    map_from_displacement,
    read_displacement,
    warp_points,
    write_displacement,
    write_volume,
)
from .spatial import (
    domain_to_world,
    index_grid,
    index_to_world,
    resample_volume,
    resampled_affine,
    world_to_domain,
    world_to_index,
)
from .volume import Volume, affine_from_itk, itk_from_affine, read_image, read_label_map

__all__ = [
    "NIFTI_INTENT_VECTOR",
    "Volume",
    "affine_from_itk",
    "displacement_from_map",
    "domain_to_world",
    "index_grid",
    "index_to_world",
    "itk_from_affine",
    "map_from_displacement",
    "read_displacement",
    "read_image",
    "read_label_map",
    "resample_volume",
    "resampled_affine",
    "warp_points",
    "world_to_domain",
    "world_to_index",
    "write_displacement",
    "write_volume",
]
