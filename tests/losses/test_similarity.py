import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from rdmm_lightning.losses import (
    default_mk_lncc_settings,
    lncc_loss,
    local_ncc_map,
    mk_lncc_loss,
    mutual_information_loss,
    ncc_loss,
    ssd_loss,
)

SHAPES = [(32, 32), (16, 16, 16)]


def smooth_image(shape, batch=2, channels=1, seed=0, dtype=torch.float64):
    """Smooth random image in [0, 1]: coarse noise upsampled (bi/trilinear)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, *[max(2, n // 4) for n in shape], generator=g)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(coarse.to(dtype), size=shape, mode=mode, align_corners=True)


def naive_lncc(x, y, window, eps, weight=None, mask=None, dilation=None):
    """1 - mean local correlation by a direct loop over (truncated) windows, (B,) float64.
    Tap ``j`` of axis ``a`` (``j = -(k-1)//2 .. k-1-(k-1)//2``) sits at offset ``dilation[a] * j``;
    ``weight`` gets the tap indices ``j``."""
    shape = x.shape[2:]
    dilation = dilation or (1,) * len(shape)
    ranges = [range(-((k - 1) // 2), k - (k - 1) // 2) for k in window]
    m = torch.ones_like(x[:, :1]) if mask is None else mask.expand(x.shape[0], 1, *shape)
    num = torch.zeros(x.shape[:2], dtype=x.dtype)
    for idx in itertools.product(*(range(n) for n in shape)):
        xs, ys, ws = [], [], []
        for off in itertools.product(*ranges):
            pos = tuple(i + d * o for i, o, d in zip(idx, off, dilation))
            if all(0 <= p < n for p, n in zip(pos, shape)):
                xs.append(x[(..., *pos)])
                ys.append(y[(..., *pos)])
                w = 1.0 if weight is None else weight(off)
                ws.append(w * m[(..., *pos)])
        xs, ys, ws = torch.stack(xs, -1), torch.stack(ys, -1), torch.stack(ws, -1)
        ws = ws / ws.sum(-1, keepdim=True)
        mx, my = (ws * xs).sum(-1, keepdim=True), (ws * ys).sum(-1, keepdim=True)
        cov = (ws * (xs - mx) * (ys - my)).sum(-1)
        var = (ws * (xs - mx) ** 2).sum(-1) * (ws * (ys - my) ** 2).sum(-1)
        num = num + m[(..., *idx)] * cov / torch.sqrt(var + eps)
    return 1 - (num / m.flatten(2).sum(-1)).mean(1)


# --- LNCC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_lncc_perfect_score_for_affine_intensity_change(shape, kernel):
    x = smooth_image(shape) + 0.05 * torch.rand(2, 1, *shape, dtype=torch.float64)
    assert float(lncc_loss(x, x, 5, kernel, eps=1e-14)) < 1e-6
    assert float(lncc_loss(x, 2.5 * x + 0.3, 5, kernel, eps=1e-14)) < 1e-6
    # the default eps only costs a little
    assert float(lncc_loss(x.float(), x.float(), 5, kernel)) < 1e-2
    # a negative contrast is the worst score, noise is in between
    assert float(lncc_loss(x, -x, 5, kernel, eps=1e-14)) == pytest.approx(2.0, abs=1e-6)
    noise = torch.rand_like(x)
    assert 0.5 < float(lncc_loss(x, noise, 5, kernel)) < 1.5


def test_lncc_matches_direct_loop():
    x = torch.rand(2, 2, 7, 6, dtype=torch.float64)
    y = 0.5 * x + torch.rand_like(x)
    for window in [(3, 3), (4, 3)]:
        expected = naive_lncc(x, y, window, 1e-8)
        got = lncc_loss(x, y, window, eps=1e-8, reduction="none")
        torch.testing.assert_close(got, expected)


def test_lncc_gaussian_with_mask_matches_direct_loop():
    x = torch.rand(2, 1, 7, 6, dtype=torch.float64)
    y = 0.5 * x + torch.rand_like(x)
    mask = torch.rand(2, 1, 7, 6, dtype=torch.float64)

    def weight(off):  # default sigma (k - 1) / 4 = 1 for k = 5
        return math.prod(math.exp(-0.5 * o**2) for o in off)

    expected = naive_lncc(x, y, (5, 5), 1e-8, weight, mask)
    got = lncc_loss(x, y, 5, "gaussian", mask, eps=1e-8, reduction="none")
    torch.testing.assert_close(got, expected)


def test_lncc_reduction_and_channels():
    x, y = smooth_image((32, 32), batch=3, channels=2), smooth_image((32, 32), 3, 2, seed=1)
    per_item = lncc_loss(x, y, reduction="none")
    assert per_item.shape == (3,)
    torch.testing.assert_close(lncc_loss(x, y), per_item.mean())
    single = lncc_loss(x[1:2, :1], y[1:2, :1])
    both = local_ncc_map(x[1:2], y[1:2]).flatten(2).mean(2)
    torch.testing.assert_close(single, 1 - both[0, 0])


def test_lncc_squared_is_sign_insensitive():
    x = smooth_image((32, 32))
    assert float(lncc_loss(x, 1 - x, 7, squared=True, eps=1e-14)) < 1e-6


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_lncc_window_per_axis_and_dilation_3d(kernel):
    """Per-axis windows (one even) and dilations against the direct loop on a tiny 3D image
    (the third axis' dilated window is wider than the image)."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 7, 9, 8, dtype=torch.float64, generator=g)
    y = 0.5 * x + torch.rand(x.shape, dtype=torch.float64, generator=g)
    window, dilation = (3, 4, 5), (2, 1, 3)

    def weight(off):  # default sigma (k - 1) / 4 taps
        if kernel == "box":
            return 1.0
        return math.prod(math.exp(-0.5 * (o / ((k - 1) / 4)) ** 2) for o, k in zip(off, window))

    expected = naive_lncc(x, y, window, 1e-8, weight, dilation=dilation)
    got = lncc_loss(x, y, window, kernel, eps=1e-8, dilation=dilation, reduction="none")
    torch.testing.assert_close(got, expected)
    if kernel == "box":  # the data tell a wrong axis order or an ignored dilation apart
        for w, d in ((window[::-1], dilation), (window, dilation[::-1]), (window, (1, 1, 1))):
            assert (naive_lncc(x, y, w, 1e-8, dilation=d) - expected).abs().min() > 1e-3, (w, d)


# --- mk-LNCC ------------------------------------------------------------------------------------


def test_default_mk_lncc_settings_200x200():
    s = default_mk_lncc_settings((200, 200))
    assert s.windows == ((11, 11), (25, 25), (49, 49))
    assert s.weights == (0.1, 0.3, 0.6) and s.dilations == (2, 2, 2)
    ref = default_mk_lncc_settings((200, 200), per_axis_sizes=False, odd=False)
    assert ref.windows == ((12, 12), (25, 25), (50, 50))


def test_default_mk_lncc_settings_oai():
    s = default_mk_lncc_settings((80, 192, 192))
    assert s.windows == ((19, 47, 47), (39, 95, 95))
    assert s.weights == (0.3, 0.7) and s.dilations == (2, 2)
    ref = default_mk_lncc_settings((80, 192, 192), per_axis_sizes=False, odd=False)
    assert ref.windows == ((20, 20, 20), (40, 40, 40))
    for window, d in zip(s.windows, s.dilations):
        assert all(d * (k - 1) + 1 <= n for k, n in zip(window, (80, 192, 192)))


def test_default_mk_lncc_settings_small_and_capped():
    s = default_mk_lncc_settings((32, 40))
    assert s.windows == ((15, 19),) and s.weights == (1.0,) and s.dilations == (1,)
    # a tier with large windows is capped to the axis length
    from rdmm_lightning.losses import MkLnccTier

    tiers = (MkLnccTier(0, (1.0,), (1.0,), (2,)),)
    capped = default_mk_lncc_settings((9, 30), tiers=tiers)
    assert capped.windows == ((5, 15),)


@pytest.mark.parametrize("shape", SHAPES)
def test_mk_lncc_perfect_score(shape):
    x = smooth_image(shape) + 0.05 * torch.rand(2, 1, *shape, dtype=torch.float64)
    assert float(mk_lncc_loss(x, x, eps=1e-14)) < 1e-6
    assert float(mk_lncc_loss(x, 0.5 * x + 0.2, [3, 5], [0.4, 0.6], [1, 2], eps=1e-14)) < 1e-6
    y = smooth_image(shape, seed=5)
    assert float(mk_lncc_loss(x, y)) > 0.1


def test_mk_lncc_is_weighted_sum():
    x, y = smooth_image((32, 32)), smooth_image((32, 32), seed=1)
    expected = 0.25 * lncc_loss(x, y, 3) + 0.75 * lncc_loss(x, y, (5, 7), dilation=2)
    got = mk_lncc_loss(x, y, [3, (5, 7)], [0.25, 0.75], [1, 2])
    torch.testing.assert_close(got, expected)


# --- NCC, SSD -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_ncc_invariances(shape):
    x, y = smooth_image(shape), smooth_image(shape, seed=1)
    assert float(ncc_loss(x, 3 * x - 1, eps=1e-14)) < 1e-10
    assert float(ncc_loss(x, -x, eps=1e-14)) == pytest.approx(2.0)
    torch.testing.assert_close(ncc_loss(x, y), ncc_loss(y, x))
    torch.testing.assert_close(ncc_loss(x, y, eps=0), ncc_loss(4 * x + 2, 0.5 * y - 1, eps=0))
    assert 0 < float(ncc_loss(x, y)) < 2


def test_ssd_by_hand():
    warped = torch.zeros(2, 2, 4, 4)
    target = torch.zeros(2, 2, 4, 4)
    target[0, 0, :3, 0] = 1.0  # 3 voxels of 32 in item 0
    target[1, 1, 0, 0] = 2.0  # 4 / 32 in item 1
    torch.testing.assert_close(
        ssd_loss(warped, target, reduction="none"), torch.tensor([3, 4]) / 32
    )
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1.0  # 8 voxels, 2 of the ones of item 0, the 2 of item 1
    torch.testing.assert_close(
        ssd_loss(warped, target, mask, reduction="none"), torch.tensor([2 / 16, 4 / 16])
    )


# --- MI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_mi_prefers_identical_images(shape):
    x = smooth_image(shape)
    same = -float(mutual_information_loss(x, x))
    noise = -float(mutual_information_loss(x, torch.rand_like(x)))
    assert same > 1.0 and noise < 0.5 * same
    nmi_same = -float(mutual_information_loss(x, x, normalized=True))
    nmi_noise = -float(mutual_information_loss(x, torch.rand_like(x), normalized=True))
    assert 1.0 < nmi_noise < nmi_same <= 2.0


def test_mi_nearly_invariant_to_intensity_remap():
    x = smooth_image((32, 32))
    same = -float(mutual_information_loss(x, x))
    remapped = -float(mutual_information_loss(x, 1 - x**2))
    assert remapped == pytest.approx(same, rel=0.15)
    # flipping the intensities is exactly symmetric with bin centres spanning [0, 1]
    assert -float(mutual_information_loss(x, 1 - x)) == pytest.approx(same, rel=1e-6)


# --- masks, gradients, errors -------------------------------------------------------------------

LOSSES = {
    "ssd": ssd_loss,
    "ncc": ncc_loss,
    "lncc": lambda x, y, mask=None: lncc_loss(x, y, 5, mask=mask),
    "lncc-gauss": lambda x, y, mask=None: lncc_loss(x, y, 5, "gaussian", mask=mask),
    "mk-lncc": mk_lncc_loss,
    "mi": mutual_information_loss,
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
def test_mask_excludes_region(name, shape):
    loss = LOSSES[name]
    x, y = smooth_image(shape), smooth_image(shape, seed=1)
    mask = torch.ones(2, 1, *shape, dtype=x.dtype)
    mask[..., : shape[0] // 2] = 0.0
    x2, y2 = x.clone(), y.clone()
    x2[..., :3] = torch.rand_like(x2[..., :3])  # changes only where mask == 0
    y2[..., :3] = 0.0
    torch.testing.assert_close(loss(x, y, mask=mask), loss(x2, y2, mask=mask))
    assert float((loss(x, y) - loss(x2, y2)).abs()) > 1e-6


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_are_finite(name, shape):
    x = smooth_image(shape, dtype=torch.float32).requires_grad_()
    y = smooth_image(shape, seed=1, dtype=torch.float32)
    y[..., : shape[0] // 2] = 0.5  # a flat region
    LOSSES[name](x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_lncc_and_mi_gradcheck():
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 6, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: lncc_loss(a, y, 3), (x,))
    assert torch.autograd.gradcheck(lambda a: lncc_loss(a, y, 3, "gaussian"), (x,))
    assert torch.autograd.gradcheck(lambda a: mutual_information_loss(a, y, num_bins=8), (x,))


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
@pytest.mark.parametrize("masked", [False, True])
def test_lncc_gradcheck_both_images_3d(kernel, masked):
    """Both images require grad (bidirectional losses warp the target too): the target's
    window statistics, kept apart from the warped image's, carry their gradient as well; even
    and dilated windows (non-symmetric window matrices) included."""
    x = torch.rand(1, 2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(1, 1, 5, 4, 6, dtype=torch.float64) > 0.3).double() if masked else None
    assert torch.autograd.gradcheck(
        lambda a, b: lncc_loss(a, b, (3, 4, 2), kernel, mask=mask, dilation=(1, 2, 1)), (x, y)
    )


@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_inputs(name):
    loss = LOSSES[name]
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="target must have the shape of warped"):
        loss(x, torch.rand(2, 1, 8, 7))
    with pytest.raises(ValueError, match=r"warped must be a tensor of shape \(B, C, \*S\)"):
        loss(torch.rand(2, 8), torch.rand(2, 8))
    with pytest.raises(ValueError, match=r"target must be a tensor of shape \(B, C, \*S\)"):
        loss(x, torch.rand(2, 1, 8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, 1, \*S\) = \(2, 1, 8, 8\)"):
        loss(x, x, mask=torch.ones(2, 2, 8, 8))
    with pytest.raises(ValueError, match="warped must be floating point"):
        loss(torch.ones(2, 1, 8, 8, dtype=torch.long), x)


def test_bad_options():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="reduction"):
        ssd_loss(x, x, reduction="sum")
    with pytest.raises(ValueError, match="kernel"):
        lncc_loss(x, x, kernel="triangle")
    with pytest.raises(ValueError, match="same length"):
        mk_lncc_loss(x, x, [3, 5], [1.0])
    with pytest.raises(ValueError, match="num_bins"):
        mutual_information_loss(x, x, num_bins=1)
    with pytest.raises(ValueError, match="shape"):
        default_mk_lncc_settings((10,))
