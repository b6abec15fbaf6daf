"""The run folder ``<paths.root>/<name>/<timestamp>/`` and the files written into it.

Which folder a run uses, in order:

1. ``paths.run_dir`` when set (also how to pin one folder for a multi-node job);
2. ``$RDMM_RUN_DIR``: set by the first process for the DDP ranks that Lightning starts as
   sub-processes (they re-run the same command and must not pick a new timestamp);
3. when resuming (``ckpt_path=RUN/last.ckpt``): the checkpoint's run folder ``RUN``;
4. under torchrun or an ``srun`` step with several tasks (every rank starts on its own): a
   name all ranks agree on, ``torchrun-<TORCHELASTIC_RUN_ID>`` or
   ``slurm-<SLURM_JOB_ID>-<SLURM_STEP_ID>`` (on a file system all nodes share);
5. otherwise a new ``YYYY-MM-DD_HH-MM-SS`` folder (``_1``, ``_2``... if taken).

``python train.py`` (a Hydra app) gets its folder from ``hydra.run.dir`` in ``configs/train.yaml``,
which calls :func:`hydra_run_dir` through the ``rdmm_run_dir`` resolver; a sweep (``-m``) writes
``<paths.root>/<name>/<timestamp>/<job number>/``. :func:`train` (the Python API) calls
:func:`resolve_run_dir`. Both follow the rules above. Relative paths are relative to the working
directory; nothing changes the working directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "RUN_DIR_ENV",
    "RUN_DIR_RESOLVER",
    "display_path",
    "exported_run_dir",
    "hydra_run_dir",
    "launcher_run_name",
    "register_run_dir_resolver",
    "resolve_run_dir",
    "resume_folder",
    "run_name",
    "write_run_files",
]

RUN_DIR_ENV = "RDMM_RUN_DIR"
RUN_DIR_RESOLVER = "rdmm_run_dir"
"""Name of the OmegaConf resolver behind ``hydra.run.dir`` and ``hydra.sweep.dir``."""


def run_name(name: str | None, choices: Mapping[str, Any] | None) -> str:
    """The run's name: ``name`` when set, else the chosen experiment, else the model, else
    ``train`` (``choices``: the option chosen in each config group)."""
    if name:
        return str(name)
    choices = choices or {}
    return str(choices.get("experiment") or choices.get("model") or "train")


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


def resume_folder(ckpt_path: str | os.PathLike | None) -> Path | None:
    """The run folder of a checkpoint that a training run wrote (its folder holds
    ``config.yaml``), as an absolute path; None for other checkpoints or no checkpoint."""
    if not ckpt_path:
        return None
    folder = Path(os.path.expanduser(os.fspath(ckpt_path))).absolute().parent
    return folder if (folder / "config.yaml").is_file() else None


def _fixed_run_dir(
    root: str, name: str, run_dir: str | None, resume_dir: Path | None
) -> Path | None:
    """Rules 1-4 of the module docs: the folder this run must use, or None for a new one."""
    explicit = run_dir or os.environ.get(RUN_DIR_ENV)
    if explicit:
        return Path(os.path.expanduser(explicit))
    if resume_dir is not None:
        return resume_dir
    shared = launcher_run_name()
    if shared is not None:
        return Path(os.path.expanduser(root)) / name / shared
    return None


def _timestamp_names() -> Iterator[str]:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    yield stamp
    for n in range(1, 1000):
        yield f"{stamp}_{n}"


def _new_timestamp_dir(parent: Path, create: bool = True) -> Path:
    """The first free ``<parent>/<timestamp>[_n]``; with ``create`` it is made here (atomically:
    runs started in the same second get different folders)."""
    if create:
        parent.mkdir(parents=True, exist_ok=True)
    for name in _timestamp_names():
        folder = parent / name
        if not create and not folder.exists():
            return folder
        if create:
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                return folder
    raise FileExistsError(f"no free run folder name under {parent}")


def resolve_run_dir(root: str, name: str, run_dir: str | None = None) -> Path:
    """Create (if needed) and return this process's absolute run folder (see module docs;
    a resumed run passes its folder as ``run_dir``)."""
    folder = _fixed_run_dir(root, name, run_dir, None)
    if folder is None:
        return _new_timestamp_dir(Path(os.path.expanduser(root)) / name).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.absolute()


def hydra_run_dir(kind: str, *, _root_: DictConfig) -> str:
    """``hydra.run.dir`` (``kind="run"``) or ``hydra.sweep.dir`` (``kind="sweep"``) of a composed
    config with its ``hydra`` node (see module docs).

    A new timestamped folder is created here only when Hydra is about to run (``hydra.mode``
    RUN for ``run``, MULTIRUN for ``sweep``), so that concurrent runs never share one; ``--cfg``
    or ``--info`` create nothing. The answer is kept in the config's resolver cache, which
    Hydra hands on to the jobs of a sweep: every later look-up (Lightning's DDP sub-process
    command, each job of a sweep) gets the same folder.
    """
    if kind not in ("run", "sweep"):
        raise ValueError(f"{RUN_DIR_RESOLVER}: kind must be run or sweep; got {kind!r}")
    cache = OmegaConf.get_cache(_root_)[RUN_DIR_RESOLVER]
    if kind not in cache:
        cache[kind] = _hydra_run_dir(kind, _root_)
    return cache[kind]


def _hydra_run_dir(kind: str, _root_: DictConfig) -> str:
    hydra = _root_.hydra
    name = run_name(_root_.get("name"), hydra.runtime.choices)
    root = str(_root_.paths.root)
    resume = resume_folder(_root_.get("ckpt_path")) if kind == "run" else None
    folder = _fixed_run_dir(root, name, _root_.paths.run_dir, resume)
    if folder is None:
        mode = RunMode.RUN if kind == "run" else RunMode.MULTIRUN
        parent = Path(os.path.expanduser(root)) / name
        folder = _new_timestamp_dir(parent, create=hydra.mode == mode)
    return str(folder)


def register_run_dir_resolver() -> None:
    """Register :func:`hydra_run_dir` as ``${rdmm_run_dir:run|sweep}`` (idempotent)."""
    if not OmegaConf.has_resolver(RUN_DIR_RESOLVER):
        OmegaConf.register_new_resolver(RUN_DIR_RESOLVER, hydra_run_dir)


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
