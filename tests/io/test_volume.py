"""The volume type and the reader: NIfTI, NRRD, MHA and PNG round trips, TorchIO images, resizing
to another grid, and errors."""

from __future__ import annotations

import gzip
import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.grid import index_grid, index_to_world
from rdmm_lightning.io import (
    Volume,
    affine_from_itk,
    itk_from_affine,
    read_image,
    read_label_map,
    write_volume,
)
from tests.io.geometry import SOURCE_2D, TARGET_3D, lps, make_sitk, sitk_array, smooth_image


def _expected_affine(geom: dict) -> np.ndarray:
    dim = len(geom["size"])
    f = np.diag([-1.0, -1.0, 1.0][:dim])
    a = np.eye(4)
    a[:dim, :dim] = f @ np.asarray(geom["direction"]) @ np.diag(geom["spacing"])
    a[:dim, 3] = f @ np.asarray(geom["origin"])
    return a


def test_itk_affine_conversions_are_inverse():
    geom = TARGET_3D
    aff = affine_from_itk(geom["origin"], geom["spacing"], geom["direction"])
    np.testing.assert_allclose(aff, _expected_affine(geom), atol=1e-12)
    origin, spacing, direction = itk_from_affine(aff)
    np.testing.assert_allclose(origin, geom["origin"], atol=1e-12)
    np.testing.assert_allclose(spacing, geom["spacing"], atol=1e-12)
    np.testing.assert_allclose(np.reshape(direction, (3, 3)), geom["direction"], atol=1e-12)
    shear = aff.copy()
    shear[0, 1] += 0.5
    with pytest.raises(ValueError, match="non-orthogonal"):
        itk_from_affine(shear)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_rotated_flipped_anisotropic(tmp_path, suffix):
    geom = TARGET_3D
    arr = smooth_image(geom["size"])
    img = make_sitk(arr, geom)
    path = tmp_path / f"in{suffix}"
    sitk.WriteImage(img, str(path))

    vol = read_image(path)
    assert vol.data.shape == (1, *geom["size"]) and vol.data.dtype == torch.float32
    assert vol.path == str(path) and vol.dim == 3
    np.testing.assert_array_equal(vol.data[0].numpy(), arr)
    tol = 1e-4 if ".nii" in suffix else 1e-9  # NIfTI stores the header in float32
    np.testing.assert_allclose(vol.affine, _expected_affine(geom), atol=tol)
    np.testing.assert_allclose(vol.voxel_size_mm, geom["spacing"], atol=tol)

    # voxel -> world agrees with ITK's TransformIndexToPhysicalPoint (LPS)
    idx = np.array([[0, 0, 0], [3, 17, 9], [19, 23, 15]])
    ours = index_to_world(idx.astype(np.float64), vol.affine)
    itk = np.array([img.TransformIndexToPhysicalPoint([int(i) for i in row]) for row in idx])
    np.testing.assert_allclose(lps(ours), itk, atol=1e-4)

    # write back and let SimpleITK read it: same geometry and values
    out = tmp_path / f"out{suffix}"
    write_volume(out, vol.data, vol.affine)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == tuple(geom["size"])
    np.testing.assert_allclose(back.GetOrigin(), geom["origin"], atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), geom["spacing"], atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), np.ravel(geom["direction"]), atol=1e-5)
    np.testing.assert_array_equal(sitk_array(back), arr)


def test_written_nifti_has_qform_and_sform(tmp_path):
    aff = _expected_affine(TARGET_3D)
    path = write_volume(tmp_path / "x.nii.gz", torch.rand(1, 1, 4, 5, 6), aff)
    hdr = nib.load(path).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(hdr.get_qform(), aff, atol=1e-4)
    np.testing.assert_allclose(hdr.get_sform(), aff, atol=1e-4)
    assert hdr.get_data_dtype() == np.float32


@pytest.mark.parametrize("shape", [(12, 9), (12, 9, 1)])
def test_2d_nifti_round_trip(tmp_path, shape):
    aff = np.diag([0.7, 1.3, 2.0, 1.0])
    aff[:3, 3] = [4.0, -3.0, 1.0]
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "a.nii.gz")
    vol = read_image(tmp_path / "a.nii.gz")
    assert vol.dim == 2 and vol.shape == (12, 9)
    np.testing.assert_array_equal(vol.data[0].numpy(), arr.reshape(12, 9))
    np.testing.assert_allclose(vol.affine, aff)
    out = write_volume(tmp_path / "b.nii.gz", vol.data, vol.affine)
    assert nib.load(out).shape == (12, 9)
    back = sitk.ReadImage(out)
    assert back.GetDimension() == 2 and back.GetSize() == (12, 9)
    np.testing.assert_allclose(back.GetOrigin(), [-4.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(back.GetSpacing(), [0.7, 1.3], atol=1e-6)


def test_2d_itk_round_trip(tmp_path):
    geom = SOURCE_2D
    arr = smooth_image(geom["size"])
    img = make_sitk(arr, geom)
    sitk.WriteImage(img, str(tmp_path / "a.mha"))
    vol = read_image(tmp_path / "a.mha")
    assert vol.dim == 2
    np.testing.assert_allclose(vol.affine, _expected_affine(geom), atol=1e-12)
    idx = np.array([[0.0, 0.0], [5.0, 20.0], [23.0, 27.0]])
    itk = np.array([img.TransformIndexToPhysicalPoint([int(i) for i in r]) for r in idx])
    np.testing.assert_allclose(lps(index_to_world(idx, vol.affine)), itk, atol=1e-9)
    for suffix in (".nii.gz", ".nrrd"):
        out = write_volume(tmp_path / f"b{suffix}", vol.data, vol.affine)
        back = sitk.ReadImage(out)
        assert back.GetDimension() == 2
        np.testing.assert_allclose(back.GetOrigin(), geom["origin"], atol=1e-4)
        np.testing.assert_allclose(back.GetDirection(), np.ravel(geom["direction"]), atol=1e-5)
        np.testing.assert_array_equal(sitk_array(back), arr)


def test_label_maps(tmp_path):
    aff = _expected_affine(TARGET_3D)
    labels = np.random.default_rng(1).integers(0, 5, size=(6, 7, 5)).astype(np.int16)
    write_volume(tmp_path / "lab.nii.gz", labels, aff, dtype=np.int16)
    ref = Volume(torch.zeros(1, 6, 7, 5), aff.copy(), "ref.nii.gz")
    lab = read_label_map(tmp_path / "lab.nii.gz", reference=ref)
    assert lab.data.dtype == torch.int64 and lab.file_dtype == "int16"
    np.testing.assert_array_equal(lab.data[0].numpy(), labels)
    # default output dtype of integer data: smallest type that holds it
    out = write_volume(tmp_path / "o.nii.gz", lab.data, aff)
    assert nib.load(out).get_data_dtype() == np.uint8
    # float files with integral values are fine
    nib.save(nib.Nifti1Image(labels.astype(np.float32), aff), tmp_path / "f.nii.gz")
    np.testing.assert_array_equal(read_label_map(tmp_path / "f.nii.gz").data[0].numpy(), labels)
    # non-integer values
    nib.save(nib.Nifti1Image(labels.astype(np.float32) + 0.25, aff), tmp_path / "g.nii.gz")
    with pytest.raises(ValueError, match=r"g\.nii\.gz.*non-integer"):
        read_label_map(tmp_path / "g.nii.gz")
    # grid mismatch with the reference: shape, then affine
    bad_shape = Volume(torch.zeros(1, 6, 7, 6), aff, "ref.nii.gz")
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*shape"):
        read_label_map(tmp_path / "lab.nii.gz", reference=bad_shape)
    moved = aff.copy()
    moved[0, 3] += 0.01
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*affine"):
        read_label_map(tmp_path / "lab.nii.gz", reference=Volume(ref.data, moved))
    moved[0, 3] = aff[0, 3] + 1e-4  # within tolerance
    read_label_map(tmp_path / "lab.nii.gz", reference=Volume(ref.data, moved))


def _nii(path, arr):
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)


def _make_bad(tmp_path, case: str):
    """Create a bad file for ``case``; returns its path."""
    rng = np.random.default_rng(0)
    if case == "missing":
        return tmp_path / "missing_file.nii.gz"
    if case == "empty":
        p = tmp_path / "empty_file.nii.gz"
        p.write_bytes(b"")
        return p
    if case == "corrupt_gz":
        p = tmp_path / "corrupt_file.nii.gz"
        p.write_bytes(bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
        return p
    if case == "truncated":
        p = tmp_path / "truncated_file.nii.gz"
        _nii(p, rng.random((10, 10, 10)).astype(np.float32))
        raw = gzip.decompress(p.read_bytes())
        p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
        return p
    if case == "corrupt_mha":
        p = tmp_path / "corrupt_file.mha"
        p.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4\nElementType = BANANA\n")
        return p
    if case == "unsupported":
        p = tmp_path / "image_file.txt"
        p.write_bytes(b"not empty")
        return p
    if case == "corrupt_png":
        p = tmp_path / "corrupt_file.png"
        p.write_bytes(b"not a png")
        return p
    if case == "rgb_png":
        p = tmp_path / "colour_file.png"
        rgb = sitk.GetImageFromArray(rng.integers(0, 255, (6, 7, 3)).astype(np.uint8), True)
        sitk.WriteImage(rgb, str(p))
        return p
    if case == "4d":
        p = tmp_path / "four_d_file.nii.gz"
        _nii(p, rng.random((5, 6, 7, 3)).astype(np.float32))
        return p
    if case == "5d":
        p = tmp_path / "five_d_file.nii.gz"
        _nii(p, rng.random((5, 6, 7, 2, 3)).astype(np.float32))
        return p
    if case == "vector_mha":
        p = tmp_path / "vector_file.mha"
        sitk.WriteImage(sitk.GetImageFromArray(rng.random((4, 5, 6, 3)), isVector=True), str(p))
        return p
    if case in ("nan", "inf"):
        arr = rng.random((5, 6, 7)).astype(np.float32)
        arr[2, 3, 4] = np.nan if case == "nan" else np.inf
        p = tmp_path / f"{case}_file.nii.gz"
        _nii(p, arr)
        return p
    if case == "zero_size":
        p = tmp_path / "zero_size_file.nii.gz"
        _nii(p, np.zeros((0, 6, 7), np.float32))
        return p
    if case == "single_voxel_axis":
        p = tmp_path / "thin_file.nii.gz"
        _nii(p, np.zeros((5, 1, 7), np.float32))
        return p
    raise AssertionError(case)


ERRORS = {
    "missing": "not found",
    "empty": "empty",
    "corrupt_gz": "cannot read",
    "truncated": "cannot read",
    "corrupt_mha": "cannot read",
    "corrupt_png": "cannot read",
    "rgb_png": "3 components per voxel",
    "unsupported": "unsupported file type",
    "4d": "4D image with 3 volumes",
    "5d": "5D image",
    "vector_mha": "vector image",
    "nan": "NaN/Inf",
    "inf": "NaN/Inf",
    "zero_size": "zero-size",
    "single_voxel_axis": ">= 2 voxels",
}


@pytest.mark.parametrize("reader", [read_image, read_label_map])
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_read_errors_name_the_file(tmp_path, case, reader):
    path = _make_bad(tmp_path, case)
    with pytest.raises(ValueError) as info:
        reader(path)
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg
    if reader is read_image or case not in ("nan", "inf"):
        assert re.search(re.escape(ERRORS[case]), msg), msg


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_2d_image_formats(tmp_path, suffix):
    """PNG and TIFF (no header: 1 mm pixels at the origin, ITK's LPS axes) read as 2D volumes,
    label maps keep their integer type."""
    arr = np.random.default_rng(2).integers(0, 200, size=(9, 13)).astype(np.uint8)  # (X, Y)
    path = tmp_path / f"slice{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(arr.T.copy()), str(path))  # numpy order (Y, X)
    vol = read_image(path)
    assert vol.dim == 2 and vol.shape == (9, 13) and vol.data.dtype == torch.float32
    np.testing.assert_array_equal(vol.data[0].numpy(), arr)
    np.testing.assert_allclose(vol.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    lab = read_label_map(path, reference=vol)
    assert lab.file_dtype == "uint8" and torch.equal(lab.data[0], torch.from_numpy(arr).long())


def test_volume_is_a_torchio_image():
    """2D data (C, X, Y) are TorchIO's (C, X, Y, 1); float data give a ScalarImage, integer data a
    LabelMap; from_torchio gives the same volume back."""
    import torchio as tio

    aff = _expected_affine(SOURCE_2D)
    image = Volume(torch.rand(1, 24, 28), aff, "a.nii.gz", "int16")
    assert isinstance(image.image, tio.ScalarImage) and image.image.shape == (1, 24, 28, 1)
    assert image.dim == 2 and image.shape == (24, 28) and image.batch().shape == (1, 1, 24, 28)
    np.testing.assert_array_equal(image.image.affine, aff)
    labels = Volume(torch.randint(0, 3, (1, 5, 6, 7)), np.eye(4))
    assert isinstance(labels.image, tio.LabelMap) and labels.dim == 3
    back = Volume.from_torchio(image.image, path="b.nii.gz")
    assert back.dim == 2 and torch.equal(back.data, image.data) and back.path == "b.nii.gz"
    assert back.grid("physical") == image.grid("physical")
    np.testing.assert_allclose(image.voxel_size_mm, SOURCE_2D["spacing"], atol=1e-12)
    with pytest.raises(ValueError, match=r"data must be \(C, \*S\)"):
        Volume(torch.zeros(5, 6), np.eye(4))
    with pytest.raises(ValueError, match=r"affine must be \(4, 4\)"):
        Volume(torch.zeros(1, 5, 6), np.eye(3))
    with pytest.raises(ValueError, match="2D volume"):
        Volume.from_torchio(labels.image, dim=2)


@pytest.mark.parametrize("geom", [TARGET_3D, SOURCE_2D])
def test_resize_keeps_corners_and_linear_functions(geom):
    shape, aff = tuple(geom["size"]), _expected_affine(geom)
    dim = len(shape)
    world = index_to_world(index_grid(shape), aff)[0]
    # an image that is linear in world coordinates survives linear resampling exactly
    image = Volume((world[0] - 0.5 * world[1] + 3.0).float().unsqueeze(0), aff)
    new_shape = tuple(max(2, n // 2 + 1) for n in shape)
    small = image.resize(new_shape)
    assert small.shape == new_shape and small.data.dtype == torch.float32
    assert small.grid() == image.grid().resize(new_shape)
    w_small = small.grid().world_points()[0]
    torch.testing.assert_close(
        small.data[0].double(), w_small[0] - 0.5 * w_small[1] + 3.0, atol=1e-4, rtol=0
    )
    # voxel i of the new grid sits at old index i (n - 1) / (m - 1)
    i = torch.tensor([[1.0] * dim], dtype=torch.float64)
    scale = torch.tensor([(n - 1) / (m - 1) for n, m in zip(shape, new_shape)])
    np.testing.assert_allclose(
        index_to_world(i, small.affine), index_to_world(i * scale, aff), atol=1e-10
    )


def test_resize_labels_nearest():
    aff = _expected_affine(TARGET_3D)
    labels = torch.randint(0, 4, (1, 20, 24, 16))
    vol = Volume(labels, aff, "lab.nii.gz", "int16")
    small = vol.resize((10, 12, 8))
    assert small.data.dtype == torch.int64 and small.file_dtype == "int16"
    assert set(small.data.unique().tolist()) <= set(labels.unique().tolist())
    assert small.data[0, 0, 0, 0] == labels[0, 0, 0, 0]
    assert small.data[0, -1, -1, -1] == labels[0, -1, -1, -1]
    # upsampling then downsampling back to the original grid is the identity
    big = vol.resize((39, 47, 31))
    assert torch.equal(big.resize((20, 24, 16)).data, labels)
    assert torch.equal(vol.resize((20, 24, 16)).data, labels)
