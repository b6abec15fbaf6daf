import numpy as np
import pytest

from rdmm_lightning.viz.panels import (
    checkerboard,
    grid_levels,
    intensity_window,
    label_edges,
    rescale,
)


def test_checkerboard_alternates_tiles():
    a, b = np.zeros((10, 12)), np.ones((10, 12))
    board = checkerboard(a, b, (3, 4))
    assert board[0, 0] == 0 and board[0, 4] == 1 and board[3, 0] == 1 and board[3, 4] == 0
    for r in range(10):
        for c in range(12):
            assert board[r, c] == (r // 3 + c // 4) % 2
    with pytest.raises(ValueError, match="one 2D shape"):
        checkerboard(a, b[:, :5], (2, 2))


def test_label_edges_trace_region_boundaries():
    lab = np.zeros((6, 7), dtype=int)
    lab[1:4, 2:5] = 3  # a 3 x 3 square: 12 unit edges
    seg = label_edges(lab)
    assert seg.shape == (12, 2, 2)
    xs, ys = seg[..., 0], seg[..., 1]
    assert xs.min() == 1.5 and xs.max() == 4.5 and ys.min() == 0.5 and ys.max() == 3.5
    lab[1:4, 4] = 5  # split: the border between labels 3 and 5 adds 3 edges
    assert len(label_edges(lab)) == 15
    assert len(label_edges(np.zeros((4, 4), dtype=int))) == 0  # negative control
    full = np.ones((2, 3), dtype=int)  # a region touching the image border is closed
    assert len(label_edges(full)) == 10


def test_grid_levels_symmetric_about_the_centre():
    values = np.linspace(-0.2, 19.3, 50)
    levels = grid_levels(values, centre=9.5, step=4.0)
    np.testing.assert_allclose(levels, [1.5, 5.5, 9.5, 13.5, 17.5])
    flipped = grid_levels(19.0 - values, centre=9.5, step=4.0)
    np.testing.assert_allclose(np.sort(19.0 - flipped), levels)
    assert len(grid_levels(np.full(5, np.nan), 0.0, 1.0)) == 0


def test_intensity_window_and_rescale():
    x = np.arange(1000, dtype=float)
    lo, hi = intensity_window(x)
    assert 5 < lo < 15 and 985 < hi < 995
    assert intensity_window(np.full(10, 3.0)) == (3.0, 4.0)
    r = rescale(x, (lo, hi))
    assert r.min() == 0.0 and r.max() == 1.0
