"""Label overlap loss: one-hot probabilities, soft Dice and the warped-label loss."""

from __future__ import annotations

import pytest
import torch

from rdmm_lightning.losses.labels import (
    label_probabilities,
    label_values,
    soft_dice_loss,
    warped_label_dice_loss,
)
from rdmm_lightning.ops.grid import domain_spacing, identity_map


def _boxes(shape, shift=0, dtype=torch.int64):
    """Two labelled boxes (labels 3 and 7) shifted by ``shift`` voxels along axis 0."""
    lab = torch.zeros(1, 1, *shape, dtype=dtype)
    lab[(0, 0, slice(3 + shift, 8 + shift), slice(2, 7))] = 3
    lab[(0, 0, slice(3 + shift, 8 + shift), slice(9, 13))] = 7
    return lab


def test_label_values_and_one_hot():
    lab = _boxes((16, 16))
    values = label_values(lab, torch.full_like(lab, 9))
    assert values.tolist() == [3, 7, 9]
    probs = label_probabilities(lab, values)
    assert probs.shape == (1, 3, 16, 16)
    assert torch.equal(probs[0, 0] > 0, lab[0, 0] == 3)
    assert torch.equal(probs[0, 1] > 0, lab[0, 0] == 7)
    assert float(probs[0, 2].sum()) == 0  # 9 is absent from this map
    # background and values without a channel get none: probabilities sum to the foreground
    assert torch.equal(probs.sum(1)[0], (lab[0, 0] > 0).float())
    only_seven = label_probabilities(lab, torch.tensor([7]))
    assert torch.equal(only_seven[0, 0], (lab[0, 0] == 7).float())


@pytest.mark.parametrize("shape", [(32, 32), (33, 31)])
def test_strided_loss_is_exact_for_identical_maps(shape):
    """On every other voxel, identical maps with the identity score 0 whatever the grid size
    (the target is taken at voxels, not resampled: soft, resampled one-hot maps of thin
    structures give a soft Dice well below 1 with themselves)."""
    lab = _boxes(shape)
    lab[0, 0, 20:22, 20:21] = 5  # a thin structure
    phi, spacing = _translation(shape, 0.0)
    assert float(warped_label_dice_loss(lab, lab, phi, spacing, stride=2)) < 1e-9


def test_soft_dice_loss_values():
    a = label_probabilities(_boxes((16, 16)), torch.tensor([3, 7])).double()
    assert float(soft_dice_loss(a, a)) == pytest.approx(0.0, abs=1e-9)
    b = torch.zeros_like(a)
    b[:, 1] = a[:, 1]  # label 3 missing in the target, label 7 perfect
    assert float(soft_dice_loss(a, b)) == pytest.approx(0.5)
    # a channel empty in both maps is left out of the mean (not a free Dice of 1)
    c = torch.cat([a, torch.zeros_like(a[:, :1])], dim=1)
    d = torch.cat([b, torch.zeros_like(b[:, :1])], dim=1)
    assert float(soft_dice_loss(c, d)) == pytest.approx(0.5)
    assert soft_dice_loss(c, d, reduction="none").shape == (1,)
    with pytest.raises(ValueError, match="one shape"):
        soft_dice_loss(a, a[:, :1])


def _translation(shape, voxels, axis=0, dtype=torch.float64):
    spacing = domain_spacing(shape)
    phi = identity_map(shape, spacing, dtype=dtype).clone()
    phi[:, axis] += voxels * spacing[axis]
    return phi, spacing


@pytest.mark.parametrize("coarse", [False, True])
def test_the_matching_pull_back_map_scores_best(coarse):
    """Target = source moved by +2 voxels: the pull-back map x -> x - 2 voxels aligns them
    (loss ~0 on the full grid); the identity and the push-forward (x + 2, the wrong convention)
    score worse."""
    shape = (16, 16)
    source, target = _boxes(shape), _boxes(shape, shift=2)
    kw = {"stride": 2} if coarse else {}

    def loss(voxels):
        phi, spacing = _translation(shape, voxels)
        return float(warped_label_dice_loss(source, target, phi, spacing, **kw))

    right, ident, wrong = loss(-2.0), loss(0.0), loss(2.0)
    assert right == pytest.approx(0.0, abs=1e-9)
    if not coarse:
        assert ident == pytest.approx(1 - 3 / 5)  # 3 of 5 rows of each box overlap
    assert right < ident < wrong


def test_gradient_in_the_map_float64():
    shape = (10, 10)
    source, target = _boxes(shape), _boxes(shape, shift=1)
    phi, spacing = _translation(shape, -0.4)
    phi = (phi + 0.01 * torch.randn_like(phi)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: warped_label_dice_loss(source, target, p, spacing), (phi,)
    )


def test_bad_inputs_are_named():
    shape = (8, 8)
    phi, spacing = _translation(shape, 0.0)
    lab = _boxes(shape)
    with pytest.raises(ValueError, match="source_label must be an integer"):
        warped_label_dice_loss(lab.float(), lab, phi, spacing)
    with pytest.raises(ValueError, match=r"target_label must have shape \(1, 1, 8, 8\)"):
        warped_label_dice_loss(lab, _boxes((16, 16)), phi, spacing)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        warped_label_dice_loss(lab, lab, phi, spacing, stride=0)
    empty = torch.zeros_like(lab)
    assert float(warped_label_dice_loss(empty, empty, phi, spacing)) == 0.0


def test_a_random_label_subset_estimates_the_mean_over_all_labels():
    """``max_labels``: each call scores a random subset; the mean of many calls is the full
    loss (the per-label Dice differ, so a fixed or biased subset would miss it)."""
    shape = (24, 24)
    source = torch.zeros(1, 1, *shape, dtype=torch.int64)
    target = torch.zeros_like(source)
    for k in range(6):  # six labels whose overlap falls with k
        source[0, 0, 4 * k : 4 * k + 4, 2:14] = k + 1
        target[0, 0, 4 * k : 4 * k + 4, 2 + 2 * k : 14 + 2 * k] = k + 1
    phi, spacing = _translation(shape, 0.0)
    full = float(warped_label_dice_loss(source, target, phi, spacing))
    torch.manual_seed(0)
    draws = [
        float(warped_label_dice_loss(source, target, phi, spacing, max_labels=2))
        for _ in range(400)
    ]
    assert len({round(d, 6) for d in draws}) > 5  # the subsets differ between calls
    assert abs(sum(draws) / len(draws) - full) < 0.02 * full
    assert float(warped_label_dice_loss(source, target, phi, spacing, max_labels=6)) == full
    with pytest.raises(ValueError, match="max_labels must be a positive integer"):
        warped_label_dice_loss(source, target, phi, spacing, max_labels=0)
