"""Figures of registrations: source, target, warped, deformation grid, det J, sigma(x)."""

from .figures import (
    figure_to_array,
    grid_image,
    registration_figure,
    save_figure,
    shooting_figure,
)
from .slices import central_slice, slice_map

__all__ = [
    "central_slice",
    "figure_to_array",
    "grid_image",
    "registration_figure",
    "save_figure",
    "shooting_figure",
    "slice_map",
]
