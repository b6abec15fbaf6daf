"""Pure tensor operations: grids, warping, resampling, finite differences, FFT smoothing."""

from .finite_differences import central_diff, divergence, gradient, jacobian_matrix
from .grid import check_map, domain_spacing, identity_map, low_res_shape, to_grid_sample
from .resample import gaussian_blur_voxels, resample_image, resample_map
from .smoothing import (
    fft_convolve,
    fourier_gaussian_kernels,
    gaussian_smooth,
    local_sigma,
    multi_gaussian_smooth,
    normalize_pre_weights,
    smooth_pre_weights,
    smooth_pre_weights_adjoint,
)
from .warp import compose_maps, sample_field, warp_image, warp_labels

__all__ = [
    "central_diff",
    "check_map",
    "compose_maps",
    "divergence",
    "domain_spacing",
    "fft_convolve",
    "fourier_gaussian_kernels",
    "gaussian_blur_voxels",
    "gaussian_smooth",
    "gradient",
    "identity_map",
    "jacobian_matrix",
    "local_sigma",
    "low_res_shape",
    "multi_gaussian_smooth",
    "normalize_pre_weights",
    "resample_image",
    "resample_map",
    "sample_field",
    "smooth_pre_weights",
    "smooth_pre_weights_adjoint",
    "to_grid_sample",
    "warp_image",
    "warp_labels",
]
