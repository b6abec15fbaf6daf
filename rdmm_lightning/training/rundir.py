"""The run folder ``<paths.root>/<name>/<timestamp>/`` and the files written into it.

Which folder a process uses, in order:

1. ``paths.run_dir`` when set (also how to pin one folder for a multi-node job);
2. ``$RDMM_RUN_DIR``: set by the first process for the DDP ranks that Lightning starts as
   sub-processes (they re-run the same command and must not pick a new timestamp);
3. under torchrun or an ``srun`` step with several tasks (every rank starts on its own): a
   name all ranks agree on, ``torchrun-<TORCHELASTIC_RUN_ID>`` or
   ``slurm-<SLURM_JOB_ID>-<SLURM_STEP_ID>`` (on a file system all nodes share);
4. otherwise a new ``YYYY-MM-DD_HH-MM-SS`` folder (``_1``, ``_2``... if taken).

Relative paths are relative to the working directory; nothing changes the working directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "RUN_DIR_ENV",
    "display_path",
    "exported_run_dir",
    "launcher_run_name",
    "resolve_run_dir",
    "write_run_files",
]

RUN_DIR_ENV = "RDMM_RUN_DIR"


def launcher_run_name() -> str | None:
    """A folder name every rank of an externally launched job agrees on, or None."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun-{run_id}"
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1"
    if job and step and int(tasks) > 1:
        return f"slurm-{job}-{step}"
    return None


def _new_timestamp_dir(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1000):
        folder = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free run folder name under {parent}")


def resolve_run_dir(root: str, name: str, run_dir: str | None = None) -> Path:
    """Create (if needed) and return this process's absolute run folder (see module docs)."""
    explicit = run_dir or os.environ.get(RUN_DIR_ENV)
    if explicit:
        folder = Path(os.path.expanduser(explicit))
    else:
        parent = Path(os.path.expanduser(root)) / name
        shared = launcher_run_name()
        if shared is None:
            return _new_timestamp_dir(parent).absolute()
        folder = parent / shared
    folder.mkdir(parents=True, exist_ok=True)
    return folder.absolute()


@contextlib.contextmanager
def exported_run_dir(folder: Path) -> Iterator[None]:
    """Set ``$RDMM_RUN_DIR`` while training (for Lightning's DDP sub-processes), then restore."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def write_run_files(folder: Path, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``config.yaml`` (resolved config) and ``overrides.yaml`` (the command-line overrides)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
