"""The output writer against SimpleITK, with results built from known maps (no optimiser).

Source and target lie on different grids with non-identity direction cosines (rotations and
flips) and anisotropic spacing; the maps are closed-form (affine, affine plus a smooth wobble).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rdmm_lightning.grid import domain_to_world, index_to_world, world_to_domain, world_to_index
from rdmm_lightning.io import read_displacement, read_image, warp_points
from rdmm_lightning.ops.grid import identity_map
from rdmm_lightning.pipeline.outputs import (
    OUTPUT_FILES,
    compute_registration_outputs,
    write_registration_outputs,
)
from rdmm_lightning.pipeline.pair import prepare_pair
from rdmm_lightning.result import RegistrationResult
from tests.io.geometry import lps, sitk_array
from tests.pipeline.helpers import affine_part, known_map, known_result, write_pair


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def case(request, tmp_path_factory):
    """Files, prepared pair and written outputs of the wobbly known map."""
    dim = request.param
    folder = tmp_path_factory.mktemp(f"pair{dim}d")
    paths = write_pair(folder, dim)
    pair = prepare_pair(
        paths["source"],
        paths["target"],
        source_label=paths["source_label"],
        target_label=paths["target_label"],
    )
    result = known_result(pair)
    out = folder / "out"
    metrics = write_registration_outputs(out, pair, result, config={"model": "rdmm"})
    return dim, paths, pair, result, out, metrics


def _assert_grid(path, reference_path):
    img, ref = nib.load(path), nib.load(reference_path)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    assert img.shape[: len(ref.shape)] == ref.shape


def test_files_and_grids(case):
    dim, paths, _, _, out, metrics = case
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "warped.nii.gz",
            "warped_label.nii.gz",
            "displacement.nii.gz",
            "inverse_displacement.nii.gz",
            "affine.mat",
            "composite.h5",
            "jacobian.nii.gz",
            "sigma_t0.nii.gz",
            "sigma_t1.nii.gz",
            "metrics.json",
            "overview.png",
        ]
    )
    for name in ("warped", "warped_label", "jacobian", "sigma_t1", "displacement"):
        _assert_grid(out / f"{name}.nii.gz", paths["target"])
    for name in ("inverse_displacement", "sigma_t0"):
        _assert_grid(out / f"{name}.nii.gz", paths["source"])
    # 2D inputs give 2D NIfTI; displacements are 5D with vector intent
    assert nib.load(out / "warped.nii.gz").ndim == dim
    disp = nib.load(out / "displacement.nii.gz")
    assert disp.ndim == 5 and disp.shape[-1] == dim and disp.header.get_intent()[0] == "vector"
    # the label map keeps the source's integer type
    assert nib.load(out / "warped_label.nii.gz").get_data_dtype() == np.int16
    assert (out / "overview.png").stat().st_size > 1000
    # nothing left behind next to the output folder
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for key in (
        "negative_jacobian_voxels",
        "negative_jacobian_fraction",
        "folds",
        "time_s",
        "model",
        "config",
        "stopped",
        "dice",
    ):
        assert key in metrics, key
    assert metrics["model"] == "rdmm" and metrics["time_s"] == 1.25 and metrics["stopped"] is None
    assert metrics["config"] == {"model": "rdmm"}
    assert set(metrics["dice"]["per_label"]) == {"1", "2"}
    assert 0 < metrics["dice"]["mean"] <= 1
    assert metrics["negative_jacobian_voxels"] == 0 and metrics["folds"] == 0.0


def test_simpleitk_resamples_source_like_warped(case):
    """THE acceptance test: SimpleITK + displacement.nii.gz reproduces warped.nii.gz."""
    dim, paths, _, _, out, _ = case
    field = sitk.Cast(sitk.ReadImage(str(out / "displacement.nii.gz")), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    source = sitk.ReadImage(str(paths["source"]))
    target = sitk.ReadImage(str(paths["target"]))
    res = sitk.Resample(source, target, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    itk = sitk_array(res)
    ours = read_image(out / "warped.nii.gz").data[0].double().numpy()
    rng = float(sitk_array(source).max() - sitk_array(source).min())
    err = np.abs(itk - ours).max() / rng
    inside = (np.abs(ours) > 0).mean()
    print(f"{dim}D: max |SimpleITK - warped.nii.gz| / range = {err:.2e} (all voxels)")
    assert inside > 0.5
    # same points, same linear interpolation, ITK's border rule: float32 rounding only
    assert err < 1e-5, err

    # label maps: nearest neighbour, same as ITK
    lab = sitk.Resample(
        sitk.ReadImage(str(paths["source_label"])), target, transform, sitk.sitkNearestNeighbor
    )
    ours_lab = np.asanyarray(nib.load(out / "warped_label.nii.gz").dataobj)
    assert (sitk_array(lab) != ours_lab).mean() < 0.002


def test_inverse_displacement_maps_source_to_target(case):
    dim, paths, pair, _, out, _ = case
    fwd = read_displacement(out / "displacement.nii.gz")
    inv = read_displacement(out / "inverse_displacement.nii.gz")
    src = pair.source_volume
    rng = np.random.default_rng(0)
    idx = rng.random((40, dim)) * (np.array(src.shape) - 1)
    y = index_to_world(idx, src.affine)
    r = warp_points(y, inv.data, inv.affine)  # source -> target
    t_idx = world_to_index(r, fwd.affine)
    inside = ((t_idx > 1) & (t_idx < np.array(fwd.shape) - 2)).all(1)
    assert inside.sum() > 10
    back = warp_points(r[inside], fwd.data, fwd.affine)  # target -> source
    err = np.abs(back - y[inside]).max()
    print(f"{dim}D: round trip source -> target -> source: max error {err:.2e} mm")
    # inversion and linear interpolation of the two fields on their grids: ~0.01 voxel
    assert err < 0.05, err
    # SimpleITK maps the points the same way (its point convention is LPS)
    field = sitk.Cast(
        sitk.ReadImage(str(out / "inverse_displacement.nii.gz")), sitk.sitkVectorFloat64
    )
    tx = sitk.DisplacementFieldTransform(field)
    itk = lps(np.array([tx.TransformPoint(tuple(p)) for p in lps(y)]))
    np.testing.assert_allclose(itk, r, atol=1e-4)


@pytest.mark.parametrize("mode", ["parity", "physical"])
def test_jacobian_of_affine_map(tmp_path, mode):
    """A pure affine pull-back: det J = det A everywhere (in either domain spacing mode)."""
    paths = write_pair(tmp_path / "in", 3)
    pair = prepare_pair(paths["source"], paths["target"], working_spacing_mode=mode)
    assert pair.spacing_mode == mode
    result = known_result(pair, model="affine", wobble=0.0, with_phi=False)
    metrics = write_registration_outputs(tmp_path / "out", pair, result)
    det = read_image(tmp_path / "out" / "jacobian.nii.gz").data
    expected = float(torch.linalg.det(affine_part(3)))
    np.testing.assert_allclose(det.numpy(), expected, atol=1e-5)
    assert metrics["jacobian_min"] == pytest.approx(expected, abs=1e-5)
    # inverse field of an affine map (numerical inversion, phi=None): exact up to float32
    inv = read_displacement(tmp_path / "out" / "inverse_displacement.nii.gz")
    fwd = read_displacement(tmp_path / "out" / "displacement.nii.gz")
    y = index_to_world(np.array([[3.0, 4.0, 5.0], [9.0, 10.0, 6.0]]), inv.affine)
    r = warp_points(y, inv.data, inv.affine)
    np.testing.assert_allclose(warp_points(r, fwd.data, fwd.affine), y, atol=1e-3)
    assert "sigma_t0" not in metrics and not (tmp_path / "out" / "sigma_t0.nii.gz").exists()


def test_working_shape_grid(tmp_path):
    """A network's fixed working size: outputs still on the target's and source's own grids."""
    paths = write_pair(tmp_path / "in", 3)
    pair = prepare_pair(paths["source"], paths["target"], working_shape=(12, 12, 10))
    assert pair.working_shape == (12, 12, 10)
    ident = identity_map(pair.working_shape, pair.domain_spacing, dtype=torch.float32)
    result = RegistrationResult(
        "svf", ident.clone(), pair.source, pair.domain_spacing, phi=ident.clone()
    )
    metrics = write_registration_outputs(tmp_path / "id", pair, result)
    disp = read_displacement(tmp_path / "id" / "displacement.nii.gz")
    assert disp.shape == pair.target_volume.shape
    assert float(disp.data.abs().max()) < 1e-4
    inv = read_displacement(tmp_path / "id" / "inverse_displacement.nii.gz")
    assert inv.shape == pair.source_volume.shape and float(inv.data.abs().max()) < 1e-4
    assert metrics["jacobian_min"] == pytest.approx(1.0, abs=1e-4)
    # identity: SimpleITK's plain resampling of the source into the target grid
    source = sitk.ReadImage(str(paths["source"]))
    target = sitk.ReadImage(str(paths["target"]))
    res = sitk_array(sitk.Resample(source, target, sitk.Transform(), sitk.sitkLinear, 0.0))
    ours = read_image(tmp_path / "id" / "warped.nii.gz").data[0].numpy()
    assert np.abs(res - ours).max() < 1e-3

    # an affine working-grid map gives the same world affine on the target grid
    phi_inv, a = known_map(pair.working_shape, pair.domain_spacing, wobble=0.0)
    result = RegistrationResult("affine", phi_inv.float(), pair.source, pair.domain_spacing)
    write_registration_outputs(tmp_path / "aff", pair, result)
    disp = read_displacement(tmp_path / "aff" / "displacement.nii.gz")
    tgt = pair.target_volume
    idx = np.array([[0.0, 0.0, 0.0], [19.0, 21.0, 15.0], [7.0, 3.0, 11.0]])
    p = index_to_world(idx, tgt.affine)
    # expected: through the working grid's domain coordinates
    x = world_to_domain(p, pair.working_affine, pair.domain_spacing)
    centre = np.array([(n - 1) * h / 2 for n, h in zip(pair.working_shape, pair.domain_spacing)])
    shift = np.array([0.02, -0.015, 0.01])
    y = (x - centre) @ a.numpy().T + centre + shift
    q = domain_to_world(y, pair.working_affine, pair.domain_spacing)
    np.testing.assert_allclose(warp_points(p, disp.data, disp.affine), q, atol=1e-3)


def test_replacing_an_existing_folder(tmp_path):
    paths = write_pair(tmp_path / "in", 2)
    pair = prepare_pair(paths["source"], paths["target"])
    out = tmp_path / "out"
    write_registration_outputs(out, pair, known_result(pair, "rdmm"))
    (out / "notes.txt").write_text("mine")
    assert (out / "sigma_t0.nii.gz").exists()
    write_registration_outputs(out, pair, known_result(pair, "svf"))
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and "sigma_t0.nii.gz" not in names
    assert json.loads((out / "metrics.json").read_text())["model"] == "svf"
    # a failing write leaves the folder as it was and no staging folder behind
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    bad = known_result(pair, "svf")
    bad.phi_inv = bad.phi_inv[:, :, :-1]
    with pytest.raises(ValueError, match="phi_inv"):
        write_registration_outputs(out, pair, bad)
    with pytest.raises(ValueError, match="phi_inv"):
        write_registration_outputs(tmp_path / "new" / "deeper", pair, bad)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


# ---------------------------------------------------------------------------------------------
# ITK transform files: affine.mat (the affine part) and composite.h5 (the whole transform)


def _affine_matrix(pair) -> torch.Tensor:
    """The affine part ``(1, D, D + 1)`` of :func:`known_map` on ``pair``'s working grid (its
    rotation/scaling about the domain centre and its shift), as ``RegistrationResult.affine``."""
    grid = pair.grid
    dim = grid.dim
    _, a = known_map(grid.shape, grid.domain_spacing, wobble=0.0)
    centre = torch.tensor([(n - 1) * h / 2 for n, h in zip(grid.shape, grid.domain_spacing)])
    shift = torch.tensor([0.02, -0.015, 0.01][:dim])
    b = centre.double() + shift.double() - a @ centre.double()
    return torch.cat([a, b[:, None]], dim=1)[None].float()


@pytest.fixture(scope="module", params=[3, 2], ids=["3d", "2d"])
def affine_case(request, tmp_path_factory):
    """Outputs of the wobbly known map whose result records its affine part."""
    dim = request.param
    folder = tmp_path_factory.mktemp(f"affine{dim}d")
    paths = write_pair(folder, dim)
    pair = prepare_pair(paths["source"], paths["target"])
    result = known_result(pair, "svf")
    result.affine = _affine_matrix(pair)
    write_registration_outputs(folder / "out", pair, result)
    return dim, paths, pair, result, folder / "out"


def _resample(paths, transform) -> np.ndarray:
    source = sitk.ReadImage(str(paths["source"]))
    target = sitk.ReadImage(str(paths["target"]))
    res = sitk.Resample(source, target, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    return sitk_array(res)


def _relative_error(paths, out, transform) -> float:
    """max |sitk.Resample(source, target, transform) - warped.nii.gz| / source range, over the
    target voxels that warped.nii.gz sees inside the source (at least half of them)."""
    ours = read_image(out / "warped.nii.gz").data[0].double().numpy()
    inside = np.abs(ours) > 0
    assert inside.mean() > 0.5
    rng = float(np.ptp(sitk_array(sitk.ReadImage(str(paths["source"])))))
    return float(np.abs(_resample(paths, transform) - ours)[inside].max()) / rng


def test_composite_h5_reproduces_warped(affine_case):
    """One file, one call: sitk.ReadTransform(composite.h5) resamples the source like
    warped.nii.gz; the order of its two parts matters (negative controls)."""
    dim, paths, _, _, out = affine_case
    composite = sitk.ReadTransform(str(out / "composite.h5"))
    assert isinstance(composite, sitk.CompositeTransform)
    assert composite.GetNumberOfTransforms() == 2
    err = _relative_error(paths, out, composite)
    print(f"{dim}D: max |sitk.Resample(composite.h5) - warped.nii.gz| / range = {err:.2e}")
    assert err < 1e-5, err  # float32 rounding of warped.nii.gz only
    affine, field = (composite.GetNthTransform(i) for i in range(2))
    assert affine.GetName() == "AffineTransform"
    assert field.GetName() == "DisplacementFieldTransform"
    # negative controls: the parts in the other order, or the field alone, are far off
    assert _relative_error(paths, out, sitk.CompositeTransform([field, affine])) > 1e-2
    assert _relative_error(paths, out, field) > 1e-2


def test_affine_mat_maps_points_like_the_affine_map(affine_case):
    """affine.mat (LPS, as SimpleITK and ANTs read it) maps target points to the source as the
    result's affine matrix does through the working grid's domain coordinates."""
    dim, _, pair, result, out = affine_case
    transform = sitk.ReadTransform(str(out / "affine.mat"))
    assert transform.GetName() == "AffineTransform" and transform.GetDimension() == dim
    rng = np.random.default_rng(1)
    idx = rng.random((30, dim)) * (np.array(pair.target_volume.shape) - 1) * 1.4 - 3.0
    p = pair.target_volume.grid().index_to_world(idx)  # RAS, some outside the grid
    m = result.affine[0].double().numpy()
    x = pair.grid.world_to_domain(p)
    q = pair.grid.domain_to_world(x @ m[:, :dim].T + m[:, dim])
    itk = np.array([transform.TransformPoint(tuple(pt)) for pt in lps(p)])
    np.testing.assert_allclose(lps(itk), q, atol=1e-9)
    # the affine is the composite's first part, written exactly as affine.mat
    composite = sitk.ReadTransform(str(out / "composite.h5"))
    assert composite.GetNthTransform(0).GetParameters() == transform.GetParameters()


def test_affine_mat_alone_for_an_affine_result(tmp_path):
    """An affine registration: affine.mat alone reproduces warped.nii.gz, and composite.h5's
    residual field is zero."""
    paths = write_pair(tmp_path / "in", 3)
    pair = prepare_pair(paths["source"], paths["target"])
    result = known_result(pair, "affine", wobble=0.0, with_phi=False)
    result.affine = _affine_matrix(pair)
    outputs = compute_registration_outputs(pair, result)
    assert float(outputs.residual_displacement.data.abs().max()) < 1e-4  # mm
    out = tmp_path / "out"
    write_registration_outputs(out, pair, result)
    err = _relative_error(paths, out, sitk.ReadTransform(str(out / "affine.mat")))
    print(f"affine result: max |sitk.Resample(affine.mat) - warped.nii.gz| / range = {err:.2e}")
    assert err < 1e-5, err
    # the transform in memory is the one in the file
    mem = outputs.to_sitk()
    disk = sitk.ReadTransform(str(out / "composite.h5"))
    pts = pair.target_volume.grid().index_to_world(np.array([[2.0, 3.0, 4.0], [10.5, 7.2, 9.0]]))
    for pt in lps(pts):
        np.testing.assert_allclose(mem.TransformPoint(tuple(pt)), disk.TransformPoint(tuple(pt)))


def test_transform_files_without_an_affine_stage(case):
    """No affine matrix (``affine=false`` runs, the case fixture): affine.mat is the identity and
    composite.h5 is the displacement alone, still reproducing warped.nii.gz."""
    _, paths, _, result, out, _ = case
    assert result.affine is None
    transform = sitk.ReadTransform(str(out / "affine.mat"))
    dim = transform.GetDimension()
    np.testing.assert_array_equal(transform.GetParameters(), np.r_[np.eye(dim).ravel(), [0] * dim])
    assert _relative_error(paths, out, sitk.ReadTransform(str(out / "composite.h5"))) < 1e-5
    assert {"affine.mat", "composite.h5"} <= set(OUTPUT_FILES)


def test_ants_applies_the_transform_files(affine_case):
    """ANTs (the ``baselines`` extra) reads both files: ``apply_transforms`` with composite.h5
    reproduces warped.nii.gz; affine.mat alone lacks the residual deformation."""
    ants = pytest.importorskip("ants")
    dim, paths, _, _, out = affine_case
    source = ants.image_read(str(paths["source"]))
    target = ants.image_read(str(paths["target"]))
    ours = read_image(out / "warped.nii.gz").data[0].double().numpy()
    inside, rng = np.abs(ours) > 0, float(np.ptp(ours))

    def error(transform: str) -> float:
        res = ants.apply_transforms(target, source, [str(out / transform)], interpolator="linear")
        return float(np.abs(res.numpy() - ours)[inside].max()) / rng

    err = error("composite.h5")
    print(f"{dim}D: max |ants.apply_transforms(composite.h5) - warped.nii.gz| / range = {err:.2e}")
    assert err < 1e-5, err
    assert error("affine.mat") > 1e-2


def test_sheared_target_grid_gets_no_composite(tmp_path, caplog):
    """ITK images cannot hold a sheared grid: no composite.h5 then (a logged warning), the other
    files as usual."""
    shear = np.eye(4)
    shear[0, 1] = 0.3
    image = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, shear), tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "s.nii.gz")
    pair = prepare_pair(tmp_path / "s.nii.gz", tmp_path / "t.nii.gz")
    with caplog.at_level("WARNING"):
        write_registration_outputs(tmp_path / "out", pair, known_result(pair, "svf"))
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "composite.h5" not in names and {"affine.mat", "warped.nii.gz"} <= names
    assert "no composite.h5" in caplog.text and "shear" in caplog.text


def test_singular_affine_gets_no_transform_files(tmp_path):
    paths = write_pair(tmp_path / "in", 2)
    pair = prepare_pair(paths["source"], paths["target"])
    result = known_result(pair, "svf")
    result.affine = torch.zeros(1, 2, 3)
    outputs = compute_registration_outputs(pair, result)
    assert outputs.affine_matrix is None and outputs.residual_displacement is None
    with pytest.raises(ValueError, match="singular"):
        outputs.to_sitk()
    write_registration_outputs(tmp_path / "out", pair, result)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert not names & {"affine.mat", "composite.h5"} and "displacement.nii.gz" in names
