"""Losses: image similarities (SSD, NCC, LNCC, mk-LNCC, MI), shooting energy, OMT, symmetry,
label overlap (:mod:`.labels`).

Pure functions in :mod:`.similarity` and :mod:`.regularizers`, windowed sums and means in
:mod:`.local_sums`, ``nn.Module`` wrappers and :func:`similarity_from_name` in :mod:`.modules`,
the registration loss (terms and weighted total) in :mod:`.compose`.
"""

from .compose import registration_terms, weighted_total
from .labels import label_probabilities, label_values, soft_dice_loss, warped_label_dice_loss
from .local_sums import box_sum, gaussian_sum, local_mean, local_sum
from .modules import (
    SIMILARITY_NAMES,
    LNCCLoss,
    MultiKernelLNCCLoss,
    MutualInformationLoss,
    NCCLoss,
    SSDLoss,
    similarity_from_name,
)
from .regularizers import (
    affine_symmetry_loss,
    map_symmetry_loss,
    omt_penalty,
    shooting_energy,
    weight_range_penalty,
)
from .similarity import (
    DEFAULT_MK_LNCC_TIERS,
    MkLnccSettings,
    MkLnccTier,
    default_mk_lncc_settings,
    lncc_loss,
    local_ncc_map,
    mk_lncc_loss,
    mutual_information_loss,
    ncc_loss,
    ssd_loss,
)

__all__ = [
    "box_sum",
    "gaussian_sum",
    "local_mean",
    "local_sum",
    "ssd_loss",
    "ncc_loss",
    "local_ncc_map",
    "lncc_loss",
    "mk_lncc_loss",
    "default_mk_lncc_settings",
    "MkLnccSettings",
    "MkLnccTier",
    "DEFAULT_MK_LNCC_TIERS",
    "mutual_information_loss",
    "shooting_energy",
    "omt_penalty",
    "weight_range_penalty",
    "affine_symmetry_loss",
    "map_symmetry_loss",
    "label_values",
    "label_probabilities",
    "soft_dice_loss",
    "warped_label_dice_loss",
    "registration_terms",
    "weighted_total",
    "SSDLoss",
    "NCCLoss",
    "LNCCLoss",
    "MultiKernelLNCCLoss",
    "MutualInformationLoss",
    "SIMILARITY_NAMES",
    "similarity_from_name",
]
