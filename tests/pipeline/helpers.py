"""Tiny image pairs on different, rotated, flipped and anisotropic grids, written as files.

Both images show the same smooth "anatomy" (a function of world position), the target slightly
deformed, so that a registration has something to find. Label maps: 1 = inner ellipsoid, 2 = shell.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from rdmm_lightning.ops.grid import identity_map
from rdmm_lightning.ops.warp import warp_image
from rdmm_lightning.pipeline.outputs import invert_map
from rdmm_lightning.result import RegistrationResult
from tests.io.geometry import flip, make_sitk, rot_x, rot_z


def centred(size, spacing, direction, centre) -> dict:
    """ITK geometry (LPS) of a grid whose centre lies at ``centre``."""
    direction = np.asarray(direction, dtype=np.float64)
    half = direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2.0)
    return dict(size=size, spacing=spacing, direction=direction, origin=tuple(centre - half))


GEOMETRIES = {
    3: (
        # source: 18 x 20 x 14, rotated about x and z, first axis flipped
        centred((18, 20, 14), (1.3, 1.1, 1.5), rot_x(15) @ rot_z(-10) @ flip(0), np.zeros(3)),
        # target: 20 x 22 x 16, rotated about z, second axis flipped, shifted by ~1 mm
        centred((20, 22, 16), (1.1, 0.95, 1.3), rot_z(20) @ flip(1), np.array([0.8, -0.6, 0.4])),
    ),
    2: (
        centred((26, 22), (1.2, 0.9), rot_z(-25, 2), np.zeros(2)),
        centred((24, 28), (0.9, 1.1), rot_z(20, 2) @ flip(1, 2), np.array([0.7, -0.5])),
    ),
}


def world_points(geometry: dict) -> np.ndarray:
    """LPS world positions ``(D, *size)`` of all voxels of an ITK geometry."""
    size = geometry["size"]
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij"))
    lin = np.asarray(geometry["direction"]) @ np.diag(geometry["spacing"])
    world = np.einsum("ij,j...->i...", lin, idx)
    return world + np.asarray(geometry["origin"]).reshape(-1, *[1] * len(size))


def anatomy(world: np.ndarray, deform: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32) and label map (int) of the phantom at LPS points ``(D, *S)``; ``deform``
    (mm) bends the phantom smoothly (the target's deformation)."""
    dim = world.shape[0]
    w = world.copy()
    if deform:
        w[0] = w[0] + deform * np.sin(w[1] / 6.0)
        w[1] = w[1] - deform * np.cos(w[0] / 7.0)
    radii = np.array([7.5, 6.0, 5.0][:dim]).reshape(-1, *[1] * dim)
    r = np.sqrt(((w / radii) ** 2).sum(0))
    image = 1.0 / (1.0 + np.exp((r - 1.0) * 8.0)) + 0.5 / (1.0 + np.exp((r - 0.55) * 12.0))
    image = image + 0.15 * np.sin(w[0] / 2.5) * np.cos(w[1] / 3.0) * (r < 1.2)
    labels = np.where(r < 0.55, 1, np.where(r < 1.0, 2, 0))
    return (100.0 * image).astype(np.float32), labels


def write_pair(folder: Path, dim: int = 3, deform: float = 1.2) -> dict[str, Path]:
    """Write ``source``, ``target``, ``source_label`` (int16) and ``target_label`` (uint8)
    ``.nii.gz`` files into ``folder``; returns their paths and the geometries."""
    folder.mkdir(parents=True, exist_ok=True)
    sgeom, tgeom = GEOMETRIES[dim]
    paths: dict[str, Path] = {}
    for name, geom, bend, dtype in (
        ("source", sgeom, 0.0, np.int16),
        ("target", tgeom, deform, np.uint8),
    ):
        image, labels = anatomy(world_points(geom), bend)
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(make_sitk(image, geom), str(paths[name]))
        paths[f"{name}_label"] = folder / f"{name}_label.nii.gz"
        sitk.WriteImage(make_sitk(labels.astype(dtype), geom), str(paths[f"{name}_label"]))
    return paths


def affine_part(dim: int, angle: float = 6.0, scale: float = 0.96) -> torch.Tensor:
    """A rotation-and-scaling matrix ``(D, D)`` acting on domain coordinates."""
    a = torch.eye(dim, dtype=torch.float64) * scale
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    a[0, 0], a[0, 1], a[1, 0], a[1, 1] = scale * c, -scale * s, scale * s, scale * c
    return a


def known_map(shape, spacing, wobble: float = 0.012) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull-back map ``(1, D, *S)`` (float64): rotation/scaling about the domain centre, a shift
    and a smooth wobble; and its affine matrix ``(D, D)``."""
    x = identity_map(shape, spacing, dtype=torch.float64)
    dim = len(shape)
    centre = torch.tensor([(n - 1) * h / 2 for n, h in zip(shape, spacing)], dtype=torch.float64)
    centre = centre.view(1, dim, *[1] * dim)
    a = affine_part(dim)
    shift = torch.tensor([0.02, -0.015, 0.01][:dim], dtype=torch.float64).view(1, dim, *[1] * dim)
    y = torch.einsum("ij,bj...->bi...", a, x - centre) + centre + shift
    bend = torch.sin(2 * math.pi * x[:, 1:2]) * torch.sin(math.pi * x[:, 0:1])
    return y + wobble * bend, a


def known_result(pair, model: str = "rdmm", wobble: float = 0.012, with_phi: bool = True):
    phi_inv, _ = known_map(pair.working_shape, pair.domain_spacing, wobble)
    phi = invert_map(phi_inv, pair.domain_spacing) if with_phi else None
    warped = warp_image(pair.source.double(), phi_inv, pair.domain_spacing)
    x = identity_map(pair.working_shape, pair.domain_spacing, dtype=torch.float64)
    sigma0 = 0.05 + 0.03 * x[:, :1]
    sigma1 = warp_image(sigma0, phi_inv, pair.domain_spacing, padding_mode="border")
    rdmm = model == "rdmm"
    return RegistrationResult(
        model=model,
        phi_inv=phi_inv.float(),
        warped=warped.float(),
        spacing=pair.domain_spacing,
        phi=None if phi is None else phi.float(),
        sigma_t0=sigma0.float() if rdmm else None,
        sigma_t1=sigma1.float() if rdmm else None,
        time_s=1.25,
        history=[{"loss": 1.0}, {"loss": 0.5}],
    )


def write_ball_pair(folder: Path) -> dict[str, Path]:
    """A 16^3 NIfTI pair at 1.5 mm: a ball (source) and a shifted ellipsoid (target)."""
    zz, yy, xx = np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij")
    source = ((zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 < 25).astype(np.float32)
    target = ((zz - 8) / 5) ** 2 + ((yy - 7) / 6) ** 2 + ((xx - 9) / 4) ** 2 < 1
    paths = {}
    for name, image in (("source", source), ("target", target.astype(np.float32))):
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.diag([1.5, 1.5, 1.5, 1.0])), paths[name])
    return paths


def tiny_rdmm_checkpoint(path: Path, shape, momentum_std: float | None = None, **kw) -> Path:
    """A small rdmm-net for ``shape`` trained one step and saved to ``path`` (``momentum_std``:
    first redraw the momentum head's weights with that std, for a visible deformation)."""
    from tests.models.helpers import loader, make_module, trainer

    torch.manual_seed(0)
    module = make_module("rdmm", shape, log_figures=False, **kw)
    if momentum_std is not None:
        with torch.no_grad():
            module.net.momentum_net.unet.out.weight.normal_(std=momentum_std)
    tr = trainer(path.parent, max_steps=1, limit_val_batches=0)
    tr.fit(module, loader(shape, n=1, batch_size=1))
    tr.save_checkpoint(path)
    return path
