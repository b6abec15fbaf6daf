"""Figures of registrations: source, target, warped, label boundaries, checkerboard, deformation
grid, det J, sigma(x), in the radiological layout of the volumes' world affines."""

from .figures import figure_to_array, grid_image, save_figure, shooting_figure
from .panels import checkerboard, label_edges
from .registration import registration_figure
from .slices import Orientation, Plane, central_slice, plane_image, slice_map, view_planes

__all__ = [
    "Orientation",
    "Plane",
    "central_slice",
    "checkerboard",
    "figure_to_array",
    "grid_image",
    "label_edges",
    "plane_image",
    "registration_figure",
    "save_figure",
    "shooting_figure",
    "slice_map",
    "view_planes",
]
