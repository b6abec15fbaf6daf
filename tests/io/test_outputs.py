"""Displacement fields in the ITK convention: SimpleITK must resample the source exactly as our
``warp_image`` does, and map points exactly as ``warp_points`` does."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.grid import domain_to_world, index_to_world
from rdmm_lightning.io import (
    NIFTI_INTENT_VECTOR,
    displacement_from_map,
    map_from_displacement,
    read_displacement,
    read_image,
    warp_points,
    write_displacement,
)
from rdmm_lightning.ops.grid import identity_map
from rdmm_lightning.ops.warp import warp_image
from tests.io.geometry import (
    SOURCE_2D,
    SOURCE_3D,
    TARGET_2D,
    TARGET_3D,
    lps,
    make_sitk,
    sitk_array,
    smooth_image,
)

CASES = {"3d": (TARGET_3D, SOURCE_3D), "2d": (TARGET_2D, SOURCE_2D)}


def analytic_map(shape, spacing) -> torch.Tensor:
    """Smooth pull-back map ``(1, D, *S)`` from target domain coordinates (parity, [0, 1]^D) into
    source domain coordinates: a rotation-and-scaling affine map plus a small sinusoidal warp,
    mapping the target domain to the middle of the source domain."""
    x = identity_map(shape, spacing, dtype=torch.float64)
    dim = len(shape)
    c = 0.5
    ang = math.radians(12.0)
    a = torch.eye(dim, dtype=torch.float64) * 0.8
    a[0, 0], a[0, 1] = 0.8 * math.cos(ang), -0.8 * math.sin(ang)
    a[1, 0], a[1, 1] = 0.8 * math.sin(ang), 0.8 * math.cos(ang)
    y = torch.einsum("ij,bj...->bi...", a, x - c) + c
    y = y + 0.03 * torch.tensor([1.0, -0.5, 0.4][:dim]).view(1, dim, *[1] * dim)
    wobble = torch.sin(2 * math.pi * x[:, 1:2]) * torch.sin(math.pi * x[:, 0:1])
    y = y + 0.03 * wobble * torch.ones(1, dim, *[1] * dim, dtype=torch.float64)
    return y


def _setup(tmp_path, case):
    tgeom, sgeom = CASES[case]
    src_arr = smooth_image(sgeom["size"])
    src_img = make_sitk(src_arr, sgeom)
    tgt_img = make_sitk(np.zeros(tgeom["size"], np.float32), tgeom)
    sitk.WriteImage(src_img, str(tmp_path / "source.nii.gz"))
    sitk.WriteImage(tgt_img, str(tmp_path / "target.nii.gz"))
    source = read_image(tmp_path / "source.nii.gz")
    target = read_image(tmp_path / "target.nii.gz")
    h_s, h_t = source.grid().domain_spacing, target.grid().domain_spacing
    phi_inv = analytic_map(target.shape, h_t)
    return source, target, h_s, h_t, phi_inv


@pytest.mark.parametrize("case", sorted(CASES))
def test_simpleitk_resamples_like_warp_image(tmp_path, case):
    source, target, h_s, h_t, phi_inv = _setup(tmp_path, case)
    warped = warp_image(source.batch().double(), phi_inv, h_s)[0, 0].numpy()

    disp = displacement_from_map(phi_inv, target.affine, h_t, source.affine, h_s)
    assert disp.shape == (target.dim, *target.shape) and disp.dtype == torch.float64
    path = write_displacement(tmp_path / "displacement.nii.gz", disp, target.affine)

    # SimpleITK applies the field as ITK/ANTs would
    field = sitk.Cast(sitk.ReadImage(path), sitk.sitkVectorFloat64)
    assert field.GetDimension() == target.dim
    transform = sitk.DisplacementFieldTransform(field)
    src_itk = sitk.ReadImage(str(tmp_path / "source.nii.gz"))
    tgt_itk = sitk.ReadImage(str(tmp_path / "target.nii.gz"))
    res = sitk.Resample(src_itk, tgt_itk, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    itk_warped = sitk_array(res)

    # interior: target voxels whose source position is at least one voxel inside the source
    src_idx = phi_inv[0] / torch.tensor(h_s, dtype=torch.float64).view(-1, *[1] * target.dim)
    upper = torch.tensor(source.shape, dtype=torch.float64).view(-1, *[1] * target.dim) - 2
    interior = ((src_idx >= 1) & (src_idx <= upper)).all(0).numpy()
    assert interior.mean() > 0.5
    rng = float(source.data.max() - source.data.min())
    err = np.abs(itk_warped - warped)[interior].max() / rng
    # both interpolate the same source samples at the same points: only float32 rounding of the
    # field and headers (about 1e-5 mm) separates them (observed: about 3e-7 of the range)
    assert err < 1e-4, err
    print(f"{case}: max |ITK - warp_image| / range = {err:.2e} on {int(interior.sum())} voxels")

    # points: target voxel centres map to their source positions (phi_inv in world units)
    field_vol = read_displacement(path)
    idx = np.array([[3, 4, 5], [10, 12, 8], [15, 7, 11], [9, 20, 2]])[:, : target.dim]
    p = index_to_world(idx.astype(np.float64), target.affine)
    expected = np.stack(
        [
            domain_to_world(phi_inv[(0, slice(None), *i)][None], source.affine, h_s)[0].numpy()
            for i in idx
        ]
    )
    ours = warp_points(p, field_vol.data, field_vol.affine)
    np.testing.assert_allclose(ours, expected, atol=1e-3)
    itk_pts = np.array([transform.TransformPoint(tuple(q)) for q in lps(p)])
    np.testing.assert_allclose(lps(itk_pts), expected, atol=1e-3)
    # points between voxels and outside the grid: same as ITK
    rng_pts = np.random.default_rng(0)
    extra = np.concatenate(
        [
            index_to_world(
                rng_pts.random((20, target.dim)) * (np.array(target.shape) - 1), target.affine
            ),
            index_to_world(np.array([[-0.4] * target.dim, [-3.0] * target.dim]), target.affine),
        ]
    )
    itk_extra = np.array([transform.TransformPoint(tuple(q)) for q in lps(extra)])
    np.testing.assert_allclose(
        warp_points(extra, field_vol.data, field_vol.affine), lps(itk_extra), atol=1e-3
    )
    # the field can be turned back into the map
    back = map_from_displacement(field_vol.data.double(), field_vol.affine, source.affine, h_s)
    torch.testing.assert_close(back, phi_inv, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_inverse_field_on_source_grid(tmp_path, case):
    """Swapped roles: a forward map phi (target domain coordinates on the source grid)."""
    source, target, h_s, h_t, _ = _setup(tmp_path, case)
    phi = analytic_map(source.shape, h_s)  # source grid -> target domain coordinates
    disp = displacement_from_map(phi, source.affine, h_s, target.affine, h_t)
    assert disp.shape == (source.dim, *source.shape)
    path = write_displacement(tmp_path / "inverse_displacement.nii.gz", disp, source.affine)
    field = read_displacement(path)
    np.testing.assert_allclose(field.affine, source.affine, atol=1e-4)
    i = (2, 3, 4)[: source.dim]
    p = index_to_world(np.array([i], dtype=np.float64), source.affine)
    expected = domain_to_world(phi[(0, slice(None), *i)][None], target.affine, h_t).numpy()
    np.testing.assert_allclose(warp_points(p, field.data, field.affine), expected, atol=1e-3)


@pytest.mark.parametrize("dim", [2, 3])
def test_displacement_file_layout(tmp_path, dim):
    shape = (5, 6, 4)[:dim]
    aff = np.diag([1.5, 0.8, 1.2, 1.0])
    aff[:3, 3] = [10.0, -5.0, 3.0]
    disp = torch.randn(dim, *shape)
    path = write_displacement(tmp_path / "d.nii.gz", disp, aff)
    img = nib.load(path)
    assert img.shape == (*shape, *(1,) * (4 - dim), dim)
    assert int(img.header["intent_code"]) == NIFTI_INTENT_VECTOR
    assert img.get_data_dtype() == np.float32
    raw = np.asanyarray(img.dataobj)
    # LPS on disk: first two components negated
    np.testing.assert_allclose(raw[1, 2, 0, 0, :2], -disp[(slice(0, 2), 1, 2, 0)[: dim + 1]])
    for out in (path, write_displacement(tmp_path / "d.mha", disp, aff)):
        back = read_displacement(out)
        assert back.data.shape == disp.shape
        torch.testing.assert_close(back.data, disp)
        # a 2D ITK image only stores the in-plane geometry
        rows = [*range(dim), 3]
        np.testing.assert_allclose(back.affine[:dim][:, rows], aff[:dim][:, rows], atol=1e-5)
    with pytest.raises(ValueError, match="d.nii.gz"):
        read_displacement(tmp_path / "missing" / "d.nii.gz")
    with pytest.raises(ValueError, match="not an ITK displacement"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), aff), tmp_path / "s.nii.gz")
        read_displacement(tmp_path / "s.nii.gz")
