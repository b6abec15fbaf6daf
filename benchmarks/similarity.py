"""Cost of the image similarities: milliseconds per call, forward alone and forward + backward
(gradient with respect to the warped image, the target fixed), on the grids the optimisers and
networks use.

    python benchmarks/similarity.py [--threads 1] [--repeats 20] [--grids 128x128 64x80x80]
        [--batch 1]

Rows: LNCC with the 9-tap box window (the affine-opt and deformable-opt default), mk-LNCC with
the default kernels of the grid (:func:`~rdmm_lightning.losses.default_mk_lncc_settings`; the
nets' and the brain preset's similarity) and the Gaussian-window LNCC. Each figure is the median
over ``--repeats`` calls after one warm-up. Only the public loss functions are called, so the
same script measures an older checkout (``PYTHONPATH=<checkout> python benchmarks/...``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch

from rdmm_lightning.losses import lncc_loss, mk_lncc_loss


def _grid(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise argparse.ArgumentTypeError(f"grid must look like 128x128 or 64x80x80; got {text}")
    return shape


def _images(batch: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two smooth random images ``(batch, 1, *S)`` in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    pool = torch.nn.functional.avg_pool2d if len(shape) == 2 else torch.nn.functional.avg_pool3d
    pair = pool(torch.rand(2 * batch, 1, *shape, generator=g), 5, 1, 2)
    return pair[:batch].contiguous(), pair[batch:].contiguous()


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


LOSSES = {
    "lncc box 9": lambda w, t: lncc_loss(w, t, 9),
    "mk-lncc (default kernels)": lambda w, t: mk_lncc_loss(w, t),
    "lncc gaussian 9": lambda w, t: lncc_loss(w, t, 9, "gaussian"),
}


def _backward(loss, warped: torch.Tensor, target: torch.Tensor) -> None:
    loss(warped, target).backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--grids", type=_grid, nargs="+", default=[(128, 128), (64, 80, 80)])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
        f"median of {args.repeats} calls, load average {os.getloadavg()[0]:.2f}"
    )
    print("| similarity | grid | forward ms | forward + backward ms |")
    print("|---|---|---|---|")
    for shape in args.grids:
        warped, target = _images(args.batch, shape)
        leaf = warped.clone().requires_grad_(True)
        for name, loss in LOSSES.items():
            forward = _median_ms(partial(loss, warped, target), args.repeats)
            both = _median_ms(partial(_backward, loss, leaf, target), args.repeats)
            grid = "x".join(map(str, shape))
            print(f"| {name} | {grid} | {forward:.2f} | {both:.2f} |", flush=True)


if __name__ == "__main__":
    main()
