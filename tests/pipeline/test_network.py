"""The predict stage: a network sees a pair at inference exactly as its data module showed it
the pair in training (one preprocessing record, stored in the checkpoint and replayed)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from datamodules import PairDataModule
from rdmm_lightning.models import read_checkpoint
from rdmm_lightning.pipeline.config import OptionError
from rdmm_lightning.pipeline.network import Network, check_network_options, load_network
from tests.models.helpers import make_module, trainer

SHAPE = (16, 16, 16)
PREPROCESSING = {"canonical": True, "resize_shape": list(SHAPE), "intensity_percentiles": [1, 99]}
# the canonical (RAS) grid both images cover: 20 x 24 x 18 voxels of 2 x 1.5 x 1.25 mm
RAS_AFFINE = np.array(
    [[2.0, 0, 0, -19.0], [0, 1.5, 0, -17.25], [0, 0, 1.25, -10.6], [0, 0, 0, 1]], dtype=float
)


def _blobs(seed: int) -> np.ndarray:
    """A smooth phantom with a little noise on the RAS grid ``(20, 24, 18)``."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in (20, 24, 18)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    shift = 0.1 * seed
    r = np.sqrt((x - shift) ** 2 / 0.5 + y**2 / 0.4 + (z + shift) ** 2 / 0.6)
    return np.exp(-3.0 * r**2) + 0.05 * rng.random(r.shape)


def _stored(data_ras: np.ndarray, codes: tuple[str, str, str], dtype, path: Path) -> Path:
    """Write the RAS image stored with voxel axes ``codes`` (same world, other voxel order)."""
    img = nib.Nifti1Image(data_ras.astype(dtype), RAS_AFFINE)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes)
    )
    stored = img.as_reoriented(ornt)
    assert nib.aff2axcodes(stored.affine) == codes
    nib.save(stored, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Source (float, values in [-100, 900], stored L-P-I) and target (int16, 0..3000, stored
    P-S-R like IXI) on one physical box, and the pair list naming them."""
    folder = tmp_path_factory.mktemp("netinput")
    source = _stored(1000.0 * _blobs(1) - 100.0, ("L", "P", "I"), np.float32, folder / "s.nii.gz")
    target = _stored(3000.0 * _blobs(2), ("P", "S", "R"), np.int16, folder / "t.nii.gz")
    pairs = folder / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        csv.writer(handle).writerows([["source", "target"], [source.name, target.name]])
    return {"source": source, "target": target, "pairs": pairs}


def _datamodule(files) -> PairDataModule:
    return PairDataModule(
        train_pairs=str(files["pairs"]),
        val_pairs=str(files["pairs"]),
        require_eval_labels=False,
        pairs_per_epoch=1,
        exclude_eval_volumes=False,
        preprocessing=PREPROCESSING,
    )


def _batch(dm: PairDataModule) -> dict:
    dm.setup("validate")
    return next(iter(dm.val_dataloader()))


def test_network_input_matches_the_data_module(files):
    """The tensors the network gets from `rdmm infer`'s prepare stage on the original files equal
    those of the data module (reoriented, resized, percentile-rescaled), and so does the domain
    spacing; without the record (old behaviour) they do not."""
    dm = _datamodule(files)
    batch = _batch(dm)
    assert batch["source"].shape == (1, 1, *SHAPE)
    module = make_module("svf", SHAPE, spacing_mode="physical")
    network = Network(module, preprocessing=dm.preprocessing)
    pair = network.prepare(files["source"], files["target"])
    torch.testing.assert_close(pair.target, batch["target"], rtol=0, atol=1e-6)
    torch.testing.assert_close(pair.source, batch["source"], rtol=0, atol=1e-5)
    assert pair.domain_spacing == pytest.approx(module.batch_spacing(batch, SHAPE), abs=1e-9)
    assert pair.source_volume.path == str(files["source"])  # outputs use the files as read
    assert float(pair.source_volume.data.min()) < 0.0
    # negative control: no record (as before) -> another grid orientation and intensity scale
    legacy = Network(module).prepare(files["source"], files["target"])
    assert float((legacy.source - batch["source"]).abs().max()) > 0.1
    assert float((legacy.target - batch["target"]).abs().max()) > 0.1


def test_checkpoint_stores_and_replays_the_record(files, tmp_path):
    """A checkpoint trained with the data module holds the record in plain form (loads with
    weights_only=True); `load_network` replays it; a checkpoint without it (written before)
    falls back to the training config's preprocessing options."""
    torch.manual_seed(0)
    dm = _datamodule(files)
    module = make_module("svf", SHAPE, log_figures=False)
    tr = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    tr.fit(module, datamodule=dm)
    path = tmp_path / "net.ckpt"
    tr.save_checkpoint(path)
    ckpt = read_checkpoint(path)  # weights_only=True
    assert ckpt["datamodule_hyper_parameters"]["preprocessing"] == dm.preprocessing.to_dict()

    network = load_network(path, device="cpu")
    assert network.preprocessing == dm.preprocessing
    pair = network.prepare(files["source"], files["target"])
    torch.testing.assert_close(pair.source, _batch(_datamodule(files))["source"], atol=1e-5, rtol=0)

    # an older checkpoint: no record, the resolved training config names the options
    del ckpt["datamodule_hyper_parameters"]["preprocessing"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    assert load_network(tmp_path / "old.ckpt").preprocessing is None
    ckpt["rdmm_config"] = {"data": {"preprocessing": {**PREPROCESSING, "no_longer_known": 1}}}
    torch.save(ckpt, tmp_path / "old_config.ckpt")
    assert load_network(tmp_path / "old_config.ckpt").preprocessing == dm.preprocessing


def test_network_options_are_checked_once_and_named_by_the_caller():
    with pytest.raises(OptionError, match="num_steps must be >= 1") as info:
        check_network_options(0, 0)
    assert info.value.named({"num_steps": "--num-steps"}) == "--num-steps must be >= 1; got 0"
    with pytest.raises(OptionError, match="refine_steps must be >= 0"):
        check_network_options(None, -1)
    with pytest.raises(OptionError, match="x.ckpt: refine_steps applies to .* not affine"):
        Network(make_module("affine", (8, 8)), name="x.ckpt", refine_steps=2)
