"""``python train.py``: training as a Hydra application.

:func:`main` runs an ``@hydra.main`` app on the packaged configs (``configs/train.yaml``, installed
as ``rdmm_lightning.configs``), so Hydra's options work as in any Hydra app: ``--cfg job``,
``--info``, ``--help``, ``-m`` sweeps, ``--shell-completion`` and ``hydra.run.dir=DIR``. Hydra
makes the run folder (``hydra.run.dir``/``hydra.sweep.dir``, see :mod:`.rundir`); each job runs
:func:`~.run.run_training` on the config Hydra composed (or, when resuming, on the checkpoint's
stored overrides plus the new ones).

Before Hydra starts, the overrides of every job (each combination of a sweep) are composed and
checked (:func:`~.compose.compose_train_config`, :func:`~.checks.check_config`; in a sweep, the
data module and model of every job are also built once, :func:`~.run.build_check`): a mistake is
one line naming the key and exit code 2, before any folder is made or any job runs, instead of
Hydra's multi-line report. Errors found later while a job sets up are reported the same way (its
empty run folder is removed); the other jobs of a sweep still run. ``--threads N`` is taken out
before Hydra sees the arguments. ``rdmm train`` calls :func:`main` with its arguments.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from .checks import check_config, check_files
from .compose import (
    GROUPS,
    ComposedConfig,
    compose_train_config,
    finish_config,
    parse_overrides,
    resume_requested,
)
from .errors import TrainingConfigError
from .hydra_args import hydra_options
from .rundir import register_run_dir_resolver
from .schema import register_schemas

__all__ = ["CONFIG_PATH", "hydra_options", "main", "sweep_jobs"]

CONFIG_PATH = "pkg://rdmm_lightning.configs"
"""Where the Hydra app finds ``train.yaml``: the installed package data."""

_CFG_KINDS = ("job", "hydra", "all")


# ------------------------------------------------------------------------------ arguments
def _pop_threads(args: list[str]) -> tuple[list[str], str | None]:
    """``--threads N`` / ``--threads=N`` taken out of ``args``: (the rest, N as given)."""
    rest: list[str] = []
    value: str | None = None
    items = iter(args)
    for a in items:
        if a == "--threads":
            value = next(items, "")
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
    return rest, value


def _thread_count(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.strip().isdigit() and int(text) >= 1):
        raise TrainingConfigError(f"--threads must be an integer >= 1; got {text!r}")
    return int(text)


def _with_cfg_kind(args: list[str]) -> list[str]:
    """A bare ``--cfg`` (as before training became a Hydra app) means ``--cfg job``."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a in ("--cfg", "-c") and (i + 1 == len(args) or args[i + 1] not in _CFG_KINDS):
            out.append("job")
    return out


def _parse(args: list[str]) -> Any:
    """Hydra's own parse of the arguments (its errors as one line)."""
    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise TrainingConfigError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(args)


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]] | None:
    """The overrides of each job of a ``-m`` sweep with Hydra's basic sweeper (every combination
    of the comma-separated choices, in Hydra's order); None when a sweep is not a plain list
    (an interval for another sweeper, a glob)."""
    axes: list[list[str]] = []
    try:
        for text, override in zip(overrides, parse_overrides(overrides)):
            if not override.is_sweep_override():
                axes.append([text])
                continue
            if not override.is_discrete_sweep():
                return None
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    except (HydraException, TypeError, ValueError, AttributeError):
        return None
    return [list(job) for job in itertools.product(*axes)]


def _check_job(overrides: Sequence[str], build: bool) -> None:
    """Compose and check one job's config; with ``build``, also build its data module and model
    once (their constructors check values and paths). Nothing is written."""
    from .run import build_check

    composed = compose_train_config(overrides)
    check_config(composed.cfg)
    check_files(composed.cfg)
    if build:
        build_check(composed.cfg)


def _check_before_hydra(parsed: Any) -> None:
    """The checks of every job a run or sweep command will start (see the module docs)."""
    custom = parsed.config_path or parsed.config_name or parsed.config_dir
    if custom or parsed.experimental_rerun:
        return  # another config than the packaged one: the jobs check themselves
    if not parsed.multirun:
        _check_job(parsed.overrides, build=False)  # the job builds at once, before training
        return
    jobs = sweep_jobs(parsed.overrides) or []
    for number, job in enumerate(jobs):
        try:  # a late job must not fail after the first ones trained for hours
            _check_job(job, build=len(jobs) > 1)
        except TrainingConfigError as exc:
            swept = " ".join(o for o in job if o not in parsed.overrides)
            raise TrainingConfigError(f"job {number} ({swept}): {exc}") from None


# -------------------------------------------------------------------------------- the app
@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo what Hydra does to the root logger (``--info`` adds a DEBUG handler on stdout), for
    callers in the same process (``rdmm train`` from Python, tests)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


_DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")


@contextlib.contextmanager
def _fresh_distributed() -> Iterator[None]:
    """After a sweep's job: close its process group and drop the variables Lightning set to
    start its DDP ranks, so that the next job starts its own (Lightning keeps both until the
    process exits)."""
    saved = {key: os.environ.get(key) for key in _DDP_VARIABLES}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _job_config(cfg: DictConfig, overrides: list[str], choices: Any) -> ComposedConfig:
    """The job's config: Hydra's, or for a resumed run the checkpoint's overrides + the new."""
    if resume_requested(overrides):
        return compose_train_config(overrides)
    chosen = {k: v for k, v in choices.items() if k in GROUPS}
    finish_config(cfg, chosen)
    return ComposedConfig(cfg, overrides, chosen)


def _remove_if_unused(folder: Path, hydra_cfg: Any, cfg: DictConfig) -> None:
    """The empty run folder that Hydra made for a job that failed before it started, and its
    empty parents up to ``paths.root`` (not a folder that the user named)."""
    named = any(str(o).startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
    if named or cfg.paths.get("run_dir"):
        return
    root = Path(str(cfg.paths.root)).expanduser().absolute()
    folder = folder.absolute()
    while folder.is_relative_to(root) and folder.is_dir() and not any(folder.iterdir()):
        with contextlib.suppress(OSError):
            folder.rmdir()
        folder = folder.parent


def _app(prog: str, relaunch: list[str], failures: list[int]) -> Callable[[], Any]:
    """The ``@hydra.main`` function; ``relaunch`` is the command that DDP sub-processes run
    (with the job's overrides), failed jobs' exit codes go to ``failures`` (2: config or
    input error, 1: the training diverged)."""
    from ..models import TrainingDivergedError
    from .run import run_training

    @hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
    def train_job(cfg: DictConfig) -> None:
        hydra_cfg = HydraConfig.get()
        overrides = [str(o) for o in hydra_cfg.overrides.task]
        run_dir = Path(hydra_cfg.runtime.output_dir)
        job = f"job {hydra_cfg.job.num}: " if hydra_cfg.mode == RunMode.MULTIRUN else ""
        if job:
            print(f"Sweep {job}{' '.join(overrides)}", flush=True)
        try:
            composed = _job_config(cfg, overrides, hydra_cfg.runtime.choices)
            # Lightning starts DDP ranks with sys.argv[1:] plus hydra.run.dir=<this folder>
            fresh = _fresh_distributed() if job else contextlib.nullcontext()
            with _argv([*relaunch, *overrides]), fresh:
                run_training(composed, run_dir=run_dir)
        except TrainingConfigError as exc:
            _remove_if_unused(run_dir, hydra_cfg, cfg)
            failures.append(2)
            print(f"{prog}: error: {job}{exc}", file=sys.stderr, flush=True)
        except TrainingDivergedError as exc:  # the run folder keeps its checkpoints
            failures.append(1)
            print(f"{prog}: error: {job}{exc} ({run_dir})", file=sys.stderr, flush=True)

    return train_job


def main(
    argv: Sequence[str] | None = None,
    prog: str = "train.py",
    *,
    threads: int | None = None,
    relaunch: Sequence[str] | None = None,
) -> int:
    """``python train.py [--threads N] [HYDRA OPTIONS] [OVERRIDE ...]``; returns the exit code.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        prog: the name that starts error lines (``train.py: error: ...``).
        threads: CPU threads when ``argv`` holds no ``--threads`` (``rdmm train`` parses it).
        relaunch: the command that DDP sub-processes run before their overrides (default
            ``sys.argv[0]``; ``rdmm train``: ``[sys.argv[0], "train"]``).

    Config and input errors are one line on stderr and exit code 2; a diverged training
    (:class:`~rdmm_lightning.models.TrainingDivergedError`) one line and exit code 1; Hydra's
    own failures keep Hydra's report and exit code 1.
    """
    from ..runtime import apply_process_threads

    args = list(sys.argv[1:] if argv is None else argv)
    failures: list[int] = []
    try:
        args, given = _pop_threads(args)
        count = _thread_count(given) if given is not None else threads
        args = _with_cfg_kind(args)
        parsed = _parse(args)
        register_schemas()
        register_run_dir_resolver()
        runs = not (
            parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion or parsed.cfg
        )
        if runs or parsed.cfg == "job":
            _check_before_hydra(parsed)
        if runs:
            try:
                apply_process_threads(count)
            except ValueError as exc:  # RDMM_NUM_THREADS
                raise TrainingConfigError(str(exc)) from None
    except TrainingConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --version
        return int(exc.code or 0)
    app = _app(prog, list(relaunch or sys.argv[:1]), failures)
    with _argv([*sys.argv[:1], *args]), _root_logging_kept():
        try:
            app()
        except SystemExit as exc:  # --help, Hydra's errors
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return max(failures, default=0)
