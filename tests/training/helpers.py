"""Tiny training configs for the tests: synthetic 2D pairs written to a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """A 1-epoch RDMM-net run on 4 pairs of 32x32 synthetic shapes (2 batches of 2)."""
    return [
        f"data.data_dir={data_dir}",
        "data.synthetic_options.num_train=4",
        "data.synthetic_options.num_val=2",
        "data.synthetic_options.num_test=2",
        "data.synthetic_options.size=48",
        "data.preprocessing.resize_shape=[32,32]",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.image_shape=[32,32]",
        "model.features=[4,8]",
        "model.solver_steps=2",
        "model.log_figures=false",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "callbacks=none",
        f"paths.root={root}",
        *extra,
    ]


def run_train_script(
    args: list[str], cwd: Path, module: bool = False, **kwargs
) -> subprocess.Popen:
    """``python train.py ARGS`` from the repository (``module``: ``python ARGS``, e.g.
    ``-m rdmm_lightning.cli.main train ...``), in ``cwd``, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    script = [] if module else [str(REPO / "train.py")]
    return subprocess.Popen(
        [sys.executable, *script, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )
