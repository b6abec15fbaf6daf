"""Build a plain (non-editable) wheel of the repository, as ``pip install .`` would install it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "configs", "rdmm_lightning", "datamodules")
"""What a wheel is built from (a copy of these, so that building leaves nothing in the repo)."""


def build_wheel(tmp_path: Path, prepare: Callable[[Path], None] | None = None) -> Path:
    """Copy :data:`SOURCES` to ``tmp_path/src``, let ``prepare(src)`` change the copy (e.g. add
    a packed model), build the wheel into ``tmp_path/dist`` and return its path."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    if prepare is not None:
        prepare(src)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel
