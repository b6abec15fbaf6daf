"""Pure tensor operations: grids, affine maps, warping, resampling, finite differences, Gaussian
kernels and smoothing, pre-weights, domain integrals."""

from .affine import (
    affine_deviation,
    affine_to_map,
    compose_affine,
    domain_centre,
    identity_affine,
    invert_affine,
    matrix_from_params,
    params_from_matrix,
)
from .energy import momentum_energy, voxel_volume
from .finite_differences import central_diff, divergence, gradient, jacobian_matrix
from .gaussian import gaussian_taps, gaussian_window
from .grid import check_map, domain_spacing, identity_map, low_res_shape, to_grid_sample
from .image_force import image_force
from .pre_weights import (
    normalize_pre_weights,
    pre_weights_from_raw,
    pre_weights_from_region,
    raw_from_pre_weights,
)
from .resample import gaussian_blur_voxels, resample_image, resample_map
from .smoothing import (
    fft_convolve,
    fourier_gaussian_kernels,
    gaussian_smooth,
    local_sigma,
    multi_gaussian_smooth,
    smooth_pre_weights,
    smooth_pre_weights_adjoint,
)
from .warp import compose_maps, sample_field, warp_image, warp_labels

__all__ = [
    "affine_deviation",
    "affine_to_map",
    "central_diff",
    "check_map",
    "compose_affine",
    "compose_maps",
    "divergence",
    "domain_centre",
    "domain_spacing",
    "fft_convolve",
    "fourier_gaussian_kernels",
    "gaussian_blur_voxels",
    "gaussian_smooth",
    "gaussian_taps",
    "gaussian_window",
    "gradient",
    "identity_affine",
    "identity_map",
    "image_force",
    "invert_affine",
    "jacobian_matrix",
    "local_sigma",
    "low_res_shape",
    "matrix_from_params",
    "momentum_energy",
    "multi_gaussian_smooth",
    "normalize_pre_weights",
    "params_from_matrix",
    "pre_weights_from_raw",
    "pre_weights_from_region",
    "raw_from_pre_weights",
    "resample_image",
    "resample_map",
    "sample_field",
    "smooth_pre_weights",
    "smooth_pre_weights_adjoint",
    "to_grid_sample",
    "voxel_volume",
    "warp_image",
    "warp_labels",
]
