"""Datasets: the built-in synthetic 2D pairs and 3D knee phantoms, and their writing helpers."""

from .nifti import (
    DatasetDirError,
    centered_origin,
    prepare_output_dir,
    ras_affine,
    save_nifti,
)
from .synth2d import (
    SYNTH2D_COLUMNS,
    SYNTH2D_CSV,
    SYNTH2D_INSIDE_H2,
    SYNTH2D_OUTSIDE_H2,
    SYNTH2D_SIGMAS,
    SYNTH2D_WEIGHT_SMOOTH_SIGMA,
    Synth2DPair,
    generate_synth2d_pair,
    predefined_pre_weights,
    synth2d_pre_weights,
    write_synth2d,
)
from .synth3d import (
    FEMORAL_CARTILAGE,
    SYNTH3D_COLUMNS,
    SYNTH3D_CSV,
    TIBIAL_CARTILAGE,
    generate_knee_phantom,
    write_synth3d_pool,
)

__all__ = [
    "DatasetDirError",
    "centered_origin",
    "prepare_output_dir",
    "ras_affine",
    "save_nifti",
    "SYNTH2D_COLUMNS",
    "SYNTH2D_CSV",
    "SYNTH2D_INSIDE_H2",
    "SYNTH2D_OUTSIDE_H2",
    "SYNTH2D_SIGMAS",
    "SYNTH2D_WEIGHT_SMOOTH_SIGMA",
    "Synth2DPair",
    "generate_synth2d_pair",
    "predefined_pre_weights",
    "synth2d_pre_weights",
    "write_synth2d",
    "FEMORAL_CARTILAGE",
    "SYNTH3D_COLUMNS",
    "SYNTH3D_CSV",
    "TIBIAL_CARTILAGE",
    "generate_knee_phantom",
    "write_synth3d_pool",
]
