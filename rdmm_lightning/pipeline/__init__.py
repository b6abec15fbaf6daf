"""The physical-space file pipeline behind ``rdmm register``, ``rdmm infer`` and ``rdmm warp``.

* :mod:`.pair` — read a source/target pair and resample it into one working grid in the
  target's physical space (:func:`prepare_pair`, :class:`PreparedPair`).
* :mod:`.outputs` — turn a working-grid :class:`~rdmm_lightning.registration.RegistrationResult`
  into architecture.md's files on the source's and target's own grids
  (:func:`write_registration_outputs`), all or nothing.
* :mod:`.register` and :mod:`.config` — options and the numerical registration of two files
  (:func:`register_files`).
* :mod:`.transform` — a saved output folder as a transform for images, label maps and points
  (:func:`warp_file`, :func:`warp_points_csv`).
"""

from .outputs import (
    OUTPUT_FILES,
    RegistrationOutputs,
    compute_registration_outputs,
    save_registration_outputs,
    write_registration_outputs,
)
from .pair import PreparedPair, normalize_intensities, prepare_pair
from .register import register_files, register_pair
from .transform import (
    RegistrationTransform,
    load_transform,
    map_points,
    warp_file,
    warp_points_csv,
    warp_volume,
)

__all__ = [
    "OUTPUT_FILES",
    "PreparedPair",
    "RegistrationOutputs",
    "RegistrationTransform",
    "compute_registration_outputs",
    "load_transform",
    "map_points",
    "normalize_intensities",
    "prepare_pair",
    "register_files",
    "register_pair",
    "save_registration_outputs",
    "warp_file",
    "warp_points_csv",
    "warp_volume",
    "write_registration_outputs",
]
