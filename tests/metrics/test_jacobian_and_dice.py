import math

import pytest
import torch

from rdmm_lightning.metrics import (
    diagonal_jacobian_product,
    dice_per_label,
    fold_statistics,
    jacobian_determinant,
    mean_dice,
)
from rdmm_lightning.ops import identity_map


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 9)])
def test_determinant_of_affine_map_with_shear_and_rotation(shape):
    dim = len(shape)
    c, s = math.cos(0.4), math.sin(0.4)
    rot = torch.eye(dim, dtype=torch.float64)
    rot[:2, :2] = torch.tensor([[c, -s], [s, c]])
    shear = torch.eye(dim, dtype=torch.float64)
    shear[0, 1] = 0.3
    scale = torch.diag(torch.tensor([1.2, 0.7, 1.1][:dim], dtype=torch.float64))
    a = rot @ shear @ scale
    phi = torch.einsum("ij,bj...->bi...", a, identity_map(shape, dtype=torch.float64)) + 0.1
    det = jacobian_determinant(phi)
    torch.testing.assert_close(det, torch.full_like(det, float(torch.linalg.det(a))))
    # the reference code's diagonal product is not the determinant
    assert (diagonal_jacobian_product(phi) - det).abs().max() > 0.02


def test_folded_map_counts_negative_voxels():
    n = 12
    phi = identity_map((n, n), dtype=torch.float64).clone()
    # reverse the order of rows 4..7 along axis 0: a fold
    phi[:, 0, 4:8] = phi[:, 0, 4:8].flip(1)
    det = jacobian_determinant(phi)
    stats = fold_statistics(det)
    bad = det <= 0
    assert int(stats["negative_jacobian_voxels"][0]) == int(bad.sum()) > 0
    # rows 4..7 reversed: central differences are negative at rows 5 and 6 only
    assert bad[0, 5:7].all() and not bad[0, :5].any() and not bad[0, 7:].any()
    assert float(stats["negative_jacobian_fraction"][0]) == pytest.approx(bad.sum() / n**2)
    assert float(stats["folds"][0]) == pytest.approx(float(det[bad].abs().sum()))


def test_dice_hand_values():
    a = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2]]).view(1, 1, 2, 4)
    b = torch.tensor([[0, 1, 2, 2], [0, 0, 2, 3]]).view(1, 1, 2, 4)
    d = dice_per_label(a, b)
    assert set(d) == {1, 2, 3}
    assert float(d[1]) == pytest.approx(2 * 1 / (3 + 1))
    assert float(d[2]) == pytest.approx(2 * 2 / (3 + 3))
    assert float(d[3]) == pytest.approx(0.0)
    assert float(mean_dice(a, b)) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="integer"):
        dice_per_label(a.float(), b)
