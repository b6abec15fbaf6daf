"""Evaluation metrics on maps and label maps."""

from .consistency import inverse_consistency_error
from .dice import dice_per_label, mean_dice
from .jacobian import diagonal_jacobian_product, fold_statistics, jacobian_determinant

__all__ = [
    "diagonal_jacobian_product",
    "dice_per_label",
    "fold_statistics",
    "inverse_consistency_error",
    "jacobian_determinant",
    "mean_dice",
]
