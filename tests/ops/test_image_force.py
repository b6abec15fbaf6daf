"""The image force (I - J)(grad I + grad J)/2: descent direction of the squared difference for
the library's pull-back warp, zero for identical images, shapes checked."""

import pytest
import torch

from rdmm_lightning.ops import identity_map, image_force, warp_image
from rdmm_lightning.ops.grid import domain_spacing


def _blob(shape, centre, width, dtype=torch.float64):
    axes = torch.meshgrid(*[torch.arange(n, dtype=dtype) for n in shape], indexing="ij")
    r2 = sum((a - c) ** 2 for a, c in zip(axes, centre))
    return torch.exp(-r2 / (2 * width**2))[None, None]


def _ssd_after_step(moving, target, spacing, step):
    """SSD of moving o (id - step * f) against target (pull-back by a displacement)."""
    force = image_force(moving, target, spacing)
    phi_inv = identity_map(moving.shape[2:], spacing, dtype=moving.dtype) - step * force
    return float((warp_image(moving, phi_inv, spacing) - target).pow(2).sum())


@pytest.mark.parametrize("shape", [(40, 36), (20, 22, 18)])
def test_small_positive_step_decreases_the_squared_difference(shape):
    """Float64: a small step along +f lowers the SSD; the opposite sign (the wrong convention)
    raises it, so the test fails if the force's sign or the warp convention flips."""
    centre = [n / 2 for n in shape]
    moving = _blob(shape, centre, 4.0)
    target = _blob(shape, [c + (2.0 if k == 0 else 1.0) for k, c in enumerate(centre)], 4.0)
    spacing = domain_spacing(shape)
    before = float((moving - target).pow(2).sum())
    force = image_force(moving, target, spacing)
    step = 0.2 * min(spacing) / float(force.abs().max())  # at most 0.2 voxel
    assert _ssd_after_step(moving, target, spacing, step) < 0.95 * before
    assert _ssd_after_step(moving, target, spacing, -step) > before


def test_zero_for_identical_images_and_shape():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 12, 10)
    force = image_force(image, image.clone(), domain_spacing((12, 10)))
    assert force.shape == (2, 2, 12, 10)
    assert torch.equal(force, torch.zeros_like(force))


def test_units_follow_the_spacing():
    """Gradients are taken in domain units: halving the spacing doubles the force."""
    torch.manual_seed(1)
    moving, target = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    f1 = image_force(moving, target, (0.1, 0.1))
    f2 = image_force(moving, target, (0.05, 0.05))
    assert torch.allclose(f2, 2 * f1)


def test_shapes_checked():
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\) with 2 spatial dims"):
        image_force(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8), (0.1, 0.1))
    with pytest.raises(ValueError, match="got"):
        image_force(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), (0.1, 0.1))
