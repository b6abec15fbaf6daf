"""Wall time of lddmm-opt and rdmm-opt against the authors' implementation (easyreg/mermaid).

    python benchmarks/speed_vs_reference.py [--pairs-2d 5] [--pairs-3d 3] [--threads 2]

The reference figures (RDMM issue, measured on a 2-core CPU with the authors' own 2D demo
schedule: multi-scale 1/4, 1/2, 1 with up to 100/100/400 L-BFGS iterations, map at half
resolution, LNCC, dopri5) are: a 128x128 synthetic shapes pair, LDDMM-opt 95 s and RDMM-opt
249 s; a 48^3 pair, 67 s and 238 s; all at Dice 0.95-0.98.

Here, with the library defaults (scales 1/4, 1/2, 1 with 60/40/20 L-BFGS iterations, parameters
at half resolution, LNCC, rk4): 2D pairs are the synthetic shapes of ``benchmarks/synth2d_opt.py``
at 128x128 (seed 2018, pairs 0..N-1); 3D pairs are generated here: a large ellipsoid holding two
inner ellipsoids/boxes and three small outer ones, each object with its own random shift (up to
8% of the size), scale (0.85-1.15) and rotation (up to 20 degrees), soft edges, a distinct
intensity per object, at 48^3. Dice is the mean over the objects (nearest-neighbour warped source
labels). Prints a markdown table with the speed-up over the reference times.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import torch

from rdmm_lightning.metrics import fold_statistics, jacobian_determinant, mean_dice
from rdmm_lightning.ops.warp import warp_labels
from rdmm_lightning.optimize import optimize_deformable
from rdmm_lightning.synthetic.synth2d import generate_synth2d_pair, pair_seed

REFERENCE_S = {("2D 128^2", "lddmm"): 95.0, ("2D 128^2", "rdmm"): 249.0}
REFERENCE_S.update({("3D 48^3", "lddmm"): 67.0, ("3D 48^3", "rdmm"): 238.0})


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A random 3D rotation matrix, each Euler angle uniform in [-max_angle, max_angle]."""
    a, b, c = rng.uniform(-max_angle, max_angle, size=3)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _object_distance(
    points: np.ndarray, kind: str, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray
) -> np.ndarray:
    """Approximate signed distance (voxels) of ``points: (3, *S)`` to an ellipsoid or box."""
    local = np.tensordot(rot.T, points - centre[:, None, None, None], axes=1)
    if kind == "ellipsoid":
        r = np.sqrt(sum((local[i] / radii[i]) ** 2 for i in range(3)))
        return (r - 1.0) * radii.min()
    q = np.abs(local) - radii[:, None, None, None]
    outside = np.sqrt(sum(np.maximum(q[i], 0.0) ** 2 for i in range(3)))
    return outside + np.minimum(q.max(axis=0), 0.0)


def shapes_pair_3d(seed: int, size: int = 48) -> tuple[np.ndarray, ...]:
    """``(source, target, source_label, target_label)`` of a 3D shapes pair at ``size^3``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*([np.arange(size, dtype=np.float64)] * 3), indexing="ij"))
    c = (size - 1) / 2.0
    objects = [("ellipsoid", np.array([c, c, c]), size * rng.uniform(0.27, 0.32, 3))]
    for k in range(2):  # inner objects, on either side of the centre
        offset = np.zeros(3)
        offset[k] = (-1) ** k * 0.1 * size
        kind = str(rng.choice(["ellipsoid", "box"]))
        objects.append((kind, np.array([c, c, c]) + offset, size * rng.uniform(0.08, 0.12, 3)))
    for k in range(3):  # outer objects in three corners
        corner = np.array([0.14, 0.14, 0.14]) * size
        corner[k] = size - 1 - 0.14 * size
        kind = str(rng.choice(["ellipsoid", "box"]))
        objects.append((kind, corner, size * rng.uniform(0.06, 0.08, 3)))
    intensities = rng.permutation(np.linspace(0.3, 1.0, len(objects)))
    images, labels = [], []
    for moved in (False, True):
        image = np.zeros((size,) * 3)
        label = np.zeros((size,) * 3, np.int64)
        for k, (kind, centre, radii) in enumerate(objects):
            rot = np.eye(3)
            if moved:
                centre = centre + rng.uniform(-0.08, 0.08, 3) * size * (0.5 if k else 1.0)
                radii = radii * rng.uniform(0.85, 1.15)
                rot = _rotation(rng, math.radians(20.0))
            d = _object_distance(grid, kind, centre, radii, rot)
            alpha = np.clip(0.5 - d, 0.0, 1.0)
            image = image * (1 - alpha) + intensities[k] * alpha
            label[d <= 0] = k + 1
        images.append(image.astype(np.float32))
        labels.append(label)
    return images[0], images[1], labels[0], labels[1]


def _register(model: str, src, tgt, src_lab, tgt_lab) -> dict[str, float]:
    s = torch.from_numpy(src)[None, None]
    t = torch.from_numpy(tgt)[None, None]
    res = optimize_deformable(s, t, model)
    sl = torch.from_numpy(src_lab)[None, None]
    tl = torch.from_numpy(tgt_lab)[None, None]
    warped = warp_labels(sl, res.phi_inv, res.spacing)
    stats = fold_statistics(jacobian_determinant(res.phi_inv, res.spacing))
    return {
        "dice": float(mean_dice(warped, tl)[0]),
        "before": float(mean_dice(sl, tl)[0]),
        "neg": float(stats["negative_jacobian_voxels"][0]),
        "time": float(res.time_s),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-2d", type=int, default=5)
    parser.add_argument("--pairs-3d", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = []
    for i in range(args.pairs_2d):
        p = generate_synth2d_pair(pair_seed(2018, i), 128)
        labels = (p.source_label.astype(np.int64), p.target_label.astype(np.int64))
        cases.append(("2D 128^2", (p.source, p.target) + labels))
    for i in range(args.pairs_3d):
        cases.append(("3D 48^3", shapes_pair_3d(1000 + i)))
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    for name, pair in cases:
        for model in ("lddmm", "rdmm"):
            r = _register(model, *pair)
            rows.setdefault((name, model), []).append(r)
            print(
                f"{name} {model}: Dice {r['before']:.3f} -> {r['dice']:.4f}, "
                f"neg det J {r['neg']:.0f}, {r['time']:.1f} s",
                flush=True,
            )
    print(f"\n{args.threads} thread(s); reference: the authors' code on a 2-core CPU")
    header = "| pairs | model | n | Dice before | Dice | neg. det J | s/pair | reference s |"
    header += " speed-up |"
    print("\n" + header)
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, model), rs in rows.items():
        t = statistics.mean(r["time"] for r in rs)
        ref = REFERENCE_S[(name, model)]
        print(
            f"| {name} | {model} | {len(rs)} | {statistics.mean(r['before'] for r in rs):.3f} | "
            f"{statistics.mean(r['dice'] for r in rs):.4f} | "
            f"{statistics.mean(r['neg'] for r in rs):.1f} | {t:.1f} | {ref:.0f} | {ref / t:.1f}x |"
        )


if __name__ == "__main__":
    main()
