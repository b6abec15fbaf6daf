"""Streaming benchmark of :class:`datamodules.PairDataModule` over a large pool.

    python benchmarks/datamodule.py [--volumes 2000] [--entries 22950] [--pairs 1000]
                                    [--workers 2] [--shape 32 32 32] [--dir DIR]

Writes ``--volumes`` small NIfTI volumes (random blobs, non-identity affine) and a pool CSV of
``--entries`` rows that reuses them (as many subjects as the OAI pool: 2,444), then streams
``--pairs`` random cross-subject training pairs (batch 1) through ``--workers`` DataLoader workers
with the OAI-like preprocessing (canonical orientation, resize, percentile normalisation). Prints
the index start-up time (reading the CSV and building the sampler), pairs per second and the
resident memory of the main process plus its workers after 100, 500 and 1,000 pairs. Memory is
read from ``/proc`` (Linux).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from datamodules import PairDataModule

OAI_SUBJECTS = 2444


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def total_rss_mb() -> tuple[float, float]:
    """``(main process, main + all descendants)`` resident memory in MB."""
    main = os.getpid()
    total, stack = 0.0, [main]
    while stack:
        pid = stack.pop()
        total += _rss_mb(pid)
        stack += _children(pid)
    return _rss_mb(main), total


def write_pool(root: Path, volumes: int, entries: int, shape: tuple[int, ...]) -> Path:
    """``volumes`` NIfTI files under ``root/images`` and ``root/pool.csv`` with ``entries`` rows."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    affine = np.diag([1.5, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-20.0, 10.0, 5.0)
    t0 = time.perf_counter()
    for i in range(volumes):
        path = images / f"vol{i:05d}.nii.gz"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        centre = rng.uniform(-0.2, 0.2, size=len(shape))
        radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
        data = (200.0 * (radius < 0.6) + 20.0 * rng.random(shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, affine), str(path))
    print(f"pool of {volumes} volumes {shape} ready in {time.perf_counter() - t0:.1f} s")
    csv_path = root / f"pool_{entries}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "subject", "side"])
        for row in range(entries):
            subject = row % OAI_SUBJECTS
            writer.writerow(
                [f"images/vol{row % volumes:05d}.nii.gz", f"S{subject:05d}", "LR"[row % 2]]
            )
    return csv_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=22950)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    parser.add_argument("--dir", help="pool folder (kept); default: a temporary folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = sorted({c for c in (100, 500, 1000, args.pairs) if c <= args.pairs})

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        csv_path = write_pool(root, args.volumes, args.entries, tuple(args.shape))
        t0 = time.perf_counter()
        dm = PairDataModule(
            data_dir=str(root),
            pool=csv_path.name,
            subject_column="subject",
            group_columns=["side"],
            pairs_per_epoch=args.pairs,
            preprocessing={
                "canonical": True,
                "resize_shape": [24, 24, 24],
                "intensity_percentiles": [0.5, 99.5],
            },
            batch_size=1,
            num_workers=args.workers,
            seed=0,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        startup = time.perf_counter() - t0
        subjects = min(args.entries, OAI_SUBJECTS)
        print(f"index start-up ({args.entries} entries, {subjects} subjects): {startup:.2f} s")
        print(f"CPU threads {torch.get_num_threads()}, workers {args.workers}, batch 1")
        print("| pairs streamed | elapsed s | pairs/s | RSS main MB | RSS main+workers MB |")
        print("|---|---|---|---|---|")
        rows = []
        t0 = time.perf_counter()
        for n, batch in enumerate(loader, start=1):
            assert batch["source"].shape[-3:] == (24, 24, 24)
            if n in checkpoints:
                elapsed = time.perf_counter() - t0
                main_mb, total_mb = total_rss_mb()
                rows.append((n, total_mb))
                print(
                    f"| {n} | {elapsed:.1f} | {n / elapsed:.1f} | {main_mb:.0f} | {total_mb:.0f} |",
                    flush=True,
                )
        growth = rows[-1][1] - rows[0][1]
        verdict = "flat" if growth < 100 else "GROWING"
        print(
            f"memory growth from {rows[0][0]} to {rows[-1][0]} pairs: {growth:+.0f} MB ({verdict}; "
            "goal < 100 MB)"
        )
        print(f"faults: {dm.fault_summary()}")


if __name__ == "__main__":
    main()
