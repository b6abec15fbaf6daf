"""``overview.png`` as the registration writer makes it: the same images stored RAS and PSR give
the same picture (world-defined deformation, real NIfTI files through the pipeline)."""

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from rdmm_lightning.pipeline.outputs import write_registration_outputs
from rdmm_lightning.pipeline.pair import prepare_pair
from rdmm_lightning.result import RegistrationResult
from rdmm_lightning.viz.registration import FOLD_COLOUR, TARGET_LABEL_COLOUR, WARPED_LABEL_COLOUR
from tests.viz.orient import restore, stored_affine

TARGET_SHAPE = (22, 26, 18)
SOURCE_SHAPE = (20, 24, 16)


def _phantom(world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels of an off-centre, asymmetric head-like phantom at RAS points (3, *S)."""
    r = np.sqrt(((world - np.array([3.0, -2.0, 4.0]).reshape(3, 1, 1, 1)) ** 2 / 90.0).sum(0))
    image = 100.0 / (1 + np.exp(6 * (r - 1))) + 30.0 * (world[0] > 6) + 15.0 * (world[2] > 8)
    labels = np.where(r < 0.5, 2, np.where(r < 1.0, 1, 0)) + 3 * ((r < 1.0) & (world[1] > 2))
    return image.astype(np.float32), labels.astype(np.int16)


def _world(shape, affine) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", affine[:3, :3], idx) + affine[:3, 3].reshape(3, 1, 1, 1)


def _write(folder, codes: str) -> dict:
    """Source (LPS-stored, its own grid) and target (stored in ``codes``) image and label files."""
    folder.mkdir()
    t_aff = np.diag([1.2, 1.0, 1.5, 1.0])
    t_aff[:3, 3] = (-12.0, -14.0, -9.0)
    s_aff = stored_affine(np.diag([1.3, 1.1, 1.6, 1.0]), "LPS", SOURCE_SHAPE)
    s_aff[:3, 3] += (-11.0, -12.0, -10.0)
    paths = {}
    src_img, src_lab = _phantom(_world(SOURCE_SHAPE, s_aff))
    tgt_img, tgt_lab = _phantom(_world(TARGET_SHAPE, t_aff) * 1.04)
    stored = stored_affine(t_aff, codes, TARGET_SHAPE)
    for name, arr, aff in (
        ("source", src_img, s_aff),
        ("source_label", src_lab, s_aff),
        ("target", restore(tgt_img, codes), stored),
        ("target_label", restore(tgt_lab, codes), stored),
    ):
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), aff), paths[name])
    return paths


def _world_result(pair) -> RegistrationResult:
    """An RDMM-like result defined in world coordinates (so the same for any storage)."""
    grid = pair.grid
    world = grid.world_points()  # (1, 3, *S) RAS mm
    bend = torch.stack(
        [
            1.5 * torch.sin(world[:, 1] / 6.0),
            -1.0 * torch.cos(world[:, 2] / 5.0),
            0.8 * torch.sin(world[:, 0] / 7.0),
        ],
        dim=1,
    )
    phi_inv = grid.world_to_domain(world + bend).float()
    sigma = (0.05 + 0.002 * world[:, :1] + 0.001 * torch.cos(world[:, 1:2] / 4.0)).float()
    return RegistrationResult(
        model="rdmm",
        phi_inv=phi_inv,
        warped=pair.source,
        spacing=pair.domain_spacing,
        phi=grid.world_to_domain(world - bend).float(),
        sigma_t0=sigma,
        sigma_t1=sigma,
        time_s=0.5,
    )


@pytest.fixture(scope="module")
def overviews(tmp_path_factory):
    root = tmp_path_factory.mktemp("overview")
    out = {}
    for codes in ("RAS", "PSR"):
        paths = _write(root / codes, codes)
        pair = prepare_pair(
            paths["source"],
            paths["target"],
            source_label=paths["source_label"],
            target_label=paths["target_label"],
        )
        config = {"sigmas": [0.03, 0.08]}
        write_registration_outputs(root / codes / "out", pair, _world_result(pair), config=config)
        with Image.open(root / codes / "out" / "overview.png") as png:
            out[codes] = np.asarray(png.convert("RGB")).astype(int)
    return out


def test_overview_png_is_the_same_for_ras_and_psr_targets(overviews):
    ras, psr = overviews["RAS"], overviews["PSR"]
    assert ras.shape == psr.shape and ras.shape[0] > 300 and ras.shape[1] > 1000
    differ = np.any(np.abs(ras - psr) > 8, axis=-1)
    assert differ.mean() < 0.001, differ.mean()
    # the phantom is asymmetric: a left-right mirrored picture differs (so equality means something)
    assert np.any(np.abs(ras - ras[:, ::-1]) > 8, axis=-1).mean() > 0.05


def test_overview_png_has_label_and_fold_free_panels(overviews):
    def count(colour):
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int(np.all(np.abs(overviews["RAS"] - rgb) < 40, axis=-1).sum())

    assert count(TARGET_LABEL_COLOUR) > 100 and count(WARPED_LABEL_COLOUR) > 100
    assert count(FOLD_COLOUR) == 0  # the smooth world deformation has no folds
