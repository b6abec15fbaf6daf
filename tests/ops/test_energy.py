"""Domain integrals: voxel volume and the kinetic energy <m, v>."""

import torch

from rdmm_lightning.ops.energy import momentum_energy, voxel_volume


def test_voxel_volume_and_energy():
    assert voxel_volume((0.5, 0.25)) == 0.125
    assert voxel_volume((2, 3, 4)) == 24.0
    m = torch.zeros(2, 2, 3, 4, dtype=torch.float64)
    m[0, 0, 1, 1], m[1, 1, 2, 3] = 2.0, -1.0
    v = torch.full_like(m, 3.0)
    expected = torch.tensor([0.75, -0.375], dtype=torch.float64)
    torch.testing.assert_close(momentum_energy(m, v, (0.5, 0.25)), expected)
    # a momentum orthogonal to the velocity has no energy (negative control for the product)
    assert float(momentum_energy(m[:, :1], v[:, :1] * (m[:, :1] == 0), (1.0, 1.0)).abs().max()) == 0
