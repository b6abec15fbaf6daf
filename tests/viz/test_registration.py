"""The registration overview: radiological layout from the world affines (a volume stored PSR,
LPS or transposed shows exactly as its RAS-stored copy), label boundaries, checkerboard, det J."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from rdmm_lightning.viz import (
    Orientation,
    figure_to_array,
    plane_image,
    registration_figure,
    save_figure,
    view_planes,
)
from rdmm_lightning.viz.registration import (
    FOLD_COLOUR,
    TARGET_LABEL_COLOUR,
    WARPED_LABEL_COLOUR,
)
from tests.viz.orient import restore, restore_index_map, stored_affine


def _smooth(rng, shape, scale):
    """Smooth random field: a few low-frequency cosines."""
    idx = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        k = rng.uniform(0.5, 2.0, len(shape)) * np.pi / np.asarray(shape)
        out += np.cos(sum(ki * x for ki, x in zip(k, idx)) + rng.uniform(0, 2 * np.pi))
    return scale * out / 4


def _ras_case(shape, seed=0):
    """RAS-stored content: an off-centre, asymmetric phantom with labels, a smooth pull-back map
    in voxel indices (fold-free), sigma; and an anisotropic, shifted RAS affine."""
    rng = np.random.default_rng(seed)
    dim = len(shape)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.asarray(shape, dtype=float).reshape(-1, *[1] * dim) * np.array(
        [0.6, 0.4, 0.55][:dim]
    ).reshape(-1, *[1] * dim)
    r = np.sqrt((((idx - centre) / (0.3 * np.asarray(shape).reshape(-1, *[1] * dim))) ** 2).sum(0))
    image = 100.0 / (1 + np.exp(8 * (r - 1))) + 40.0 * (idx[0] > 0.75 * shape[0])
    image += 20.0 * (idx[1] < 0.2 * shape[1])
    labels = np.where(r < 0.5, 2, np.where(r < 1.0, 1, 0))
    warped_labels = np.roll(labels, 1, axis=0)
    index_map = idx + np.stack([_smooth(rng, shape, 0.8) for _ in range(dim)])
    sigma = 0.05 + _smooth(rng, shape, 0.01)
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 5.0)
    if dim == 2:
        affine[2, 2] = 1.0
    return dict(
        image=image.astype(np.float32),
        warped=(0.9 * image + 3).astype(np.float32),
        labels=labels,
        warped_labels=warped_labels,
        index_map=index_map,
        sigma=sigma.astype(np.float32),
        affine=affine,
    )


def _figure(case, codes=None, use_affine=True, **kwargs):
    """The registration figure of a case, re-stored in orientation ``codes`` (None: RAS)."""
    dim = case["index_map"].shape[0]
    shape = case["image"].shape
    affine = case["affine"] if codes is None else stored_affine(case["affine"], codes, shape)

    def t(x, channel=True):
        x = x if codes is None else restore(x, codes)
        x = torch.from_numpy(np.ascontiguousarray(x))
        return x.unsqueeze(0) if channel else x

    phi = case["index_map"] if codes is None else restore_index_map(case["index_map"], codes)
    return registration_figure(
        t(case["image"]),
        t(case["image"]),
        t(case["warped"]),
        torch.from_numpy(phi).float(),
        (1.0,) * dim,
        affine=affine if use_affine else None,
        target_label=t(case["labels"], False),
        warped_label=t(case["warped_labels"], False),
        sigma=t(case["sigma"]),
        title="same pair",
        **kwargs,
    )


def _panel_arrays(fig):
    """``{(row, column): RGB pixels}`` of every image panel of a drawn figure."""
    rgb = figure_to_array(fig)
    height = rgb.shape[0]
    out = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is None:  # colour bars
            continue
        box = ax.get_window_extent()
        rows = slice(int(round(height - box.y1)), int(round(height - box.y0)))
        out[(spec.rowspan.start, spec.colspan.start)] = rgb[rows, int(box.x0) : int(box.x1)]
    return out


def _max_fraction_differing(a, b):
    """Largest fraction of differing pixels over the panels of two figures (each drawn once:
    the constrained layout may move by a pixel when drawn again)."""
    pa, pb = _panel_arrays(a), _panel_arrays(b)
    assert pa.keys() == pb.keys()
    assert len(pa) == sum(1 for ax in a.axes if ax.get_subplotspec() is not None)
    fractions = []
    for key in pa:
        x, y = pa[key], pb[key]
        if x.shape != y.shape:
            return 1.0
        fractions.append(float(np.mean(np.any(np.abs(x.astype(int) - y) > 8, axis=-1))))
    return max(fractions)


@pytest.mark.parametrize(
    "shape, codes",
    [((14, 16, 10), "PSR"), ((14, 16, 10), "LPS"), ((18, 14), "LP"), ((18, 14), "PR")],
    ids=["3d-psr", "3d-lps", "2d-lp", "2d-pr"],
)
def test_overview_same_for_any_storage(tmp_path, shape, codes):
    """A volume stored PSR/LPS shows exactly as its RAS-stored copy (the panels' pixels), and
    the figure files are written; without the affines (voxel order) they differ."""
    case = _ras_case(shape)
    ras, other = _figure(case), _figure(case, codes)
    panels = [ax for ax in ras.axes if ax.get_subplotspec() is not None]
    assert len(panels) == (3 if len(shape) == 3 else 1) * 8
    assert _max_fraction_differing(ras, other) <= 0.001  # 0.0 here: identical pixels
    # negative control: ignoring the affines changes the panels
    assert (
        _max_fraction_differing(_figure(case, use_affine=False), _figure(case, codes, False)) > 0.2
    )
    for name, fig in (("ras", ras), (codes, other)):
        path = save_figure(fig, tmp_path / f"overview_{name}.png")
        with Image.open(path) as png:
            assert png.size == tuple(figure_to_array(fig).shape[1::-1])
    (title,) = [t.get_text() for t in ras.texts]  # the suptitle
    assert "radiological" in title and "right on the image left" in title


def _colour_pixels(rgb, colour):
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(rgb.astype(int) - target) < 40, axis=-1)))


def test_label_contours_only_with_labels():
    case = _ras_case((20, 22, 12))
    with_labels = _figure(case)
    titles = [ax.get_title() for ax in with_labels.axes if ax.get_subplotspec() is not None]
    assert any(t.startswith("labels") for t in titles)
    rgb = figure_to_array(with_labels)
    assert _colour_pixels(rgb, WARPED_LABEL_COLOUR) > 50
    assert _colour_pixels(rgb, TARGET_LABEL_COLOUR) > 50
    # negative control: no labels, no label panel and none of the label colours
    t = torch.from_numpy(case["image"])[None]
    phi = torch.from_numpy(case["index_map"]).float()
    bare = registration_figure(t, t, t, phi, (1.0, 1.0, 1.0), affine=case["affine"])
    titles = [ax.get_title() for ax in bare.axes if ax.get_subplotspec() is not None]
    assert not any(t.startswith("labels") for t in titles)
    rgb = figure_to_array(bare)
    assert _colour_pixels(rgb, WARPED_LABEL_COLOUR) == 0
    assert _colour_pixels(rgb, TARGET_LABEL_COLOUR) == 0


def test_checkerboard_panel_alternates_warped_and_target():
    rng = np.random.default_rng(3)
    shape = (40, 32)
    warped = (rng.random(shape) > 0.5).astype(np.float32)
    target = 1.0 - warped  # two-valued images: both windows are (0, 1)
    affine = np.diag([-0.8, -1.2, 1.0, 1.0])  # LPS-stored 2D image, anisotropic pixels
    phi = torch.from_numpy(
        np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    ).float()
    w, t = torch.from_numpy(warped)[None], torch.from_numpy(target)[None]
    fig = registration_figure(w, t, w, phi, (1.0, 1.0), affine=affine, tiles=4)
    (ax,) = [a for a in fig.axes if a.get_title().startswith("checkerboard")]
    panel = np.asarray(ax.get_images()[0].get_array())
    (plane,) = view_planes(2, True)
    expected_warped = plane_image(Orientation.of(affine, 2).apply(warped), plane)
    from_target = panel != expected_warped  # True in the target's tiles
    assert not from_target[0, 0]  # top-left tile: warped
    tc = int(np.argmax(from_target[0]))  # first column of the second tile
    tr = int(np.argmax(from_target[:, 0]))
    assert tc > 1 and tr > 1
    # square tiles in millimetres: 1.2 mm rows (A), 0.8 mm columns (R)
    assert abs(tr * 1.2 - tc * 0.8) <= 1.2
    r, c = np.indices(panel.shape)
    np.testing.assert_array_equal(from_target, (r // tr + c // tc) % 2 == 1)


def test_det_panel_shows_folds():
    """det J <= 0 is drawn in the fold colour, and the title counts the voxels."""
    case = _ras_case((24, 20))
    phi = torch.from_numpy(case["index_map"]).float()
    det = torch.ones(24, 20)
    det[5:9, 4:8] = -0.5
    t = torch.from_numpy(case["image"])[None]
    fig = registration_figure(t, t, t, phi, (1.0, 1.0), affine=case["affine"], det=det)
    (ax,) = [a for a in fig.axes if a.get_title().startswith("det J")]
    assert "16 voxels <= 0" in ax.get_title()
    assert _colour_pixels(figure_to_array(fig), FOLD_COLOUR) > 16
    ok = registration_figure(t, t, t, phi, (1.0, 1.0), affine=case["affine"], det=det.abs())
    assert _colour_pixels(figure_to_array(ok), FOLD_COLOUR) == 0


def test_overview_png_of_a_120_cube_is_small(tmp_path):
    case = _ras_case((120, 120, 120), seed=4)
    rng = np.random.default_rng(5)
    case["image"] = case["image"] + rng.normal(scale=5.0, size=case["image"].shape).astype(
        np.float32
    )
    path = save_figure(_figure(case, "PSR"), tmp_path / "overview.png")
    size = os.path.getsize(path)
    assert 10_000 < size < 1_000_000, size


def test_source_on_another_grid_needs_its_affine():
    case = _ras_case((10, 12, 8))
    t = torch.from_numpy(case["image"])[None]
    phi = torch.from_numpy(case["index_map"]).float()
    with pytest.raises(ValueError, match="source_affine"):
        registration_figure(t[:, :9], t, t, phi, (1.0,) * 3, affine=case["affine"])
    with pytest.raises(ValueError, match="target's grid"):
        registration_figure(t, t, t, phi, (1.0,) * 3, affine=case["affine"], sigma=t[:, :9])
