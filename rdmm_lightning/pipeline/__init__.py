"""The physical-space file pipeline behind ``rdmm register``, ``rdmm infer``, ``rdmm evaluate``,
``rdmm warp`` and the Python API.

* :mod:`.run` — the one orchestrator: register, infer and evaluate as compositions of the same
  stages, read -> prepare -> register or predict -> write (:func:`register_files`,
  :func:`infer_files`).
* :mod:`.pair` — read a source/target pair and resample it into one working grid in the
  target's physical space (:func:`prepare_pair`, :class:`PreparedPair`; a network's
  preprocessing record replayed by :func:`prepare_preprocessed_pair`).
* :mod:`.register` and :mod:`.config` — options and the numerical registration stage
  (:func:`register_pair`).
* :mod:`.network` — a trained checkpoint as the predict stage (:func:`load_network`).
* :mod:`.outputs` — turn a working-grid :class:`~rdmm_lightning.result.RegistrationResult`
  into the output files (docs/architecture.md) on the source's and target's own grids
  (:func:`write_registration_outputs`), all or nothing.
* :mod:`.evaluate` — every pair of a CSV file, summarised.
* :mod:`.transform` — a saved output folder as a transform for images, label maps and points
  (:func:`warp_image`, :func:`transform_points`).
"""

from .network import Network, load_network
from .outputs import (
    OUTPUT_FILES,
    RegistrationOutputs,
    compute_registration_outputs,
    save_registration_outputs,
    write_registration_outputs,
)
from .pair import PreparedPair, normalize_intensities, prepare_pair, prepare_preprocessed_pair
from .register import register_pair
from .run import infer_files, register_files
from .transform import (
    RegistrationTransform,
    load_transform,
    map_points,
    transform_points,
    warp_file,
    warp_image,
    warp_points_csv,
    warp_volume,
)

__all__ = [
    "OUTPUT_FILES",
    "Network",
    "PreparedPair",
    "RegistrationOutputs",
    "RegistrationTransform",
    "compute_registration_outputs",
    "infer_files",
    "load_network",
    "load_transform",
    "map_points",
    "normalize_intensities",
    "prepare_pair",
    "prepare_preprocessed_pair",
    "register_files",
    "register_pair",
    "save_registration_outputs",
    "transform_points",
    "warp_file",
    "warp_image",
    "warp_points_csv",
    "warp_volume",
    "write_registration_outputs",
]
