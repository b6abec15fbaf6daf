"""The training entry point behind ``python train.py`` and ``rdmm train``.

:func:`train` composes the config, checks it, builds data, model, loggers, callbacks and the
Trainer, runs ``fit`` (resuming with ``ckpt_path``), and reports the run folder and an
``rdmm infer`` command to try the result. Everything that can be wrong with the config or the
inputs is found before training starts and raised as one :class:`TrainingConfigError`.
"""

from __future__ import annotations

import shlex
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from ..options import NetworkPrecision
from .callbacks import ConfigSnapshot, StepSeeds, checkpoint_callbacks
from .checkpoint_io import AtomicCheckpointIO
from .checks import check_config, check_files
from .compose import ComposedConfig, compose_train_config
from .errors import TrainingConfigError
from .loggers import build_loggers, finish_loggers
from .rundir import display_path, exported_run_dir, resolve_run_dir, write_run_files
from .weights import check_same_model, init_weights, read_training_checkpoint

__all__ = ["TrainResult", "build_check", "infer_command", "main", "run_training", "train"]


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run folder.
        best_checkpoint: ``best.ckpt`` (None when nothing was validated).
        last_checkpoint: ``last.ckpt`` (None with ``checkpoint.save_last=false``).
        monitor, best_score: the metric that chose ``best.ckpt`` and its best value.
        infer_command: an ``rdmm infer`` command on a validation pair (None without one).
        trainer, module, datamodule: the objects of the run (rank 0 holds the final state).
        notes: lines printed at the end (wandb sync hints, init_from report).
    """

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    monitor: str | None
    best_score: float | None
    infer_command: str | None
    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    notes: list[str] = field(default_factory=list)


def _rank_zero() -> bool:
    return int(getattr(rank_zero_only, "rank", 0)) == 0


def _say(text: str) -> None:
    if _rank_zero():
        print(text, flush=True)


def _build(node: DictConfig, where: str) -> Any:
    """``instantiate`` with user errors (bad value, missing file) as one line naming ``where``."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (ValueError, TypeError, FileNotFoundError)):
            lines = str(cause).strip().splitlines()
            first = lines[0] if lines else type(cause).__name__
            raise TrainingConfigError(f"{where}: {first}") from None
        raise


def build_check(cfg: DictConfig) -> None:
    """Build the data module and the model once and drop them: their constructors check values
    and paths (how a sweep checks every job before the first one starts)."""
    _build(cfg.data, "data")
    _build(cfg.model, "model")


def _callbacks(cfg: DictConfig, has_logger: bool) -> tuple[list[Callback], list[str]]:
    callbacks: list[Callback] = []
    notes: list[str] = []
    for name, node in (cfg.callbacks or {}).items():
        callback = _build(node, f"callbacks.{name}")
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            notes.append(f"callbacks.{name}: skipped (LearningRateMonitor needs a logger)")
            continue
        callbacks.append(callback)
    return callbacks, notes


def _trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy = cfg.trainer.strategy
    if isinstance(strategy, DictConfig):
        kwargs["strategy"] = _build(strategy, "trainer.strategy")
    return kwargs


def _eval_pair(datamodule: Any) -> tuple[str, str, str | None, str | None] | None:
    """Paths of the first validation (else test) pair: source, target and labels."""
    for name in ("val_set", "test_set"):
        dataset = getattr(datamodule, name, None)
        if dataset is None or len(dataset) == 0:
            continue
        volumes = dataset.pairs.volumes
        src, tgt = (int(i) for i in dataset.pairs.pairs[0])
        return volumes.path(src), volumes.path(tgt), volumes.label(src), volumes.label(tgt)
    return None


def infer_command(checkpoint: Path, datamodule: Any, out: Path) -> str | None:
    """``rdmm infer --checkpoint CKPT SOURCE TARGET --out DIR [labels]`` for a held-out pair."""
    pair = _eval_pair(datamodule)
    if pair is None:
        return None
    source, target, source_label, target_label = pair
    words = ["rdmm", "infer", "--checkpoint", display_path(checkpoint), source, target]
    words += ["--out", display_path(out)]
    if source_label and target_label:
        words += ["--source-label", source_label, "--target-label", target_label]
    return shlex.join(words)


def _existing(path: str | None) -> Path | None:
    return Path(path) if path and Path(path).is_file() else None


def _summary(result: TrainResult, seconds: float, end_notes: list[str]) -> list[str]:
    lines = [
        f"Training finished in {seconds / 60:.1f} min. Run folder: {display_path(result.run_dir)}"
    ]
    if result.best_checkpoint is not None and result.best_score is not None:
        lines.append(
            f"  best.ckpt: {result.monitor} = {result.best_score:.4f}   "
            f"({display_path(result.best_checkpoint)})"
        )
    if result.last_checkpoint is not None:
        lines.append(f"  last.ckpt: {display_path(result.last_checkpoint)}")
    if result.infer_command:
        lines += ["Try the model on a validation pair:", f"  {result.infer_command}"]
    return lines + end_notes


def _build_objects(cfg: DictConfig) -> tuple[Any, pl.LightningModule, list[str]]:
    """Seed, then data module and model (``init_from`` weights loaded, ``ckpt_path`` checked)."""
    resume = read_training_checkpoint(cfg.ckpt_path, "ckpt_path") if cfg.ckpt_path else None
    if cfg.seed is not None:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.float32_matmul_precision:
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))
    datamodule = _build(cfg.data, "data")
    module = _build(cfg.model, "model")
    warn_emulated_bfloat16(cfg, module)
    if resume is not None:
        check_same_model(resume, module, "ckpt_path")
    notes = []
    if cfg.init_from:
        notes = init_weights(module, str(cfg.init_from), bool(cfg.init_from_strict))
    return datamodule, module, notes


def warn_emulated_bfloat16(cfg: DictConfig, module: Any) -> bool:
    """Warn (and return True) when the model's networks are to train in bfloat16 on a CPU that
    has no native bfloat16 arithmetic, where it is emulated and 10-20x slower than float32."""
    from ..nets.precision import native_bfloat16

    hparams = getattr(module, "hparams", {}) or {}
    if hparams.get("network_precision") != NetworkPrecision.BFLOAT16:
        return False
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if not on_cpu or native_bfloat16("cpu"):
        return False
    warnings.warn(
        "model.network_precision=bfloat16 on a CPU without AVX512-BF16/AMX: the networks run "
        "emulated, 10-20x slower than float32 there; set model.network_precision=float32",
        stacklevel=2,
    )
    return True


def _build_trainer(
    cfg: DictConfig, run_dir: Path, overrides: Sequence[str]
) -> tuple[pl.Trainer, list[Logger], list[str]]:
    """The Trainer with the run's loggers, checkpoint callbacks and atomic checkpoint writes."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers, notes = build_loggers(cfg.logger, _rank_zero())
    extra, callback_notes = _callbacks(cfg, bool(loggers))
    callbacks: list[Callback] = [] if cfg.seed is None else [StepSeeds(int(cfg.seed))]
    callbacks += [*checkpoint_callbacks(run_dir, cfg.checkpoint), *extra]
    callbacks.append(ConfigSnapshot(resolved, overrides))
    trainer = pl.Trainer(
        **_trainer_kwargs(cfg),
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    return trainer, loggers, notes + callback_notes


def run_training(composed: ComposedConfig, run_dir: Path | None = None) -> TrainResult:
    """Run the training a composed config describes (see the module docstring).

    Args:
        composed: the config and the overrides that made it.
        run_dir: the run folder (the Hydra app's ``hydra.run.dir``); None: chosen here by
            :func:`~.rundir.resolve_run_dir` after the data and the model were built.
    """
    cfg = composed.cfg
    check_config(cfg)
    check_files(cfg)
    datamodule, module, notes = _build_objects(cfg)
    if run_dir is None:
        run_dir = resolve_run_dir(cfg.paths.root, str(cfg.name), cfg.paths.run_dir)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir = run_dir.absolute()
    cfg.paths.run_dir = str(run_dir)
    if _rank_zero():
        write_run_files(run_dir, cfg, composed.overrides)
    trainer, loggers, trainer_notes = _build_trainer(cfg, run_dir, composed.overrides)
    for line in [*trainer_notes, *notes, f"Run folder: {display_path(run_dir)}"]:
        _say(line)
    start = time.perf_counter()
    with exported_run_dir(run_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not")
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        best = trainer.checkpoint_callback
        best_path = _existing(getattr(best, "best_model_path", None))
        last_path = _existing(str(run_dir / "last.ckpt"))
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=str(best_path or last_path))
    end_notes = finish_loggers(loggers)
    score = getattr(best, "best_model_score", None) if best_path else None
    checkpoint = best_path or last_path
    result = TrainResult(
        run_dir=run_dir,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        monitor=getattr(best, "monitor", None) if best_path else None,
        best_score=None if score is None else float(score),
        infer_command=None
        if checkpoint is None or not cfg.print_infer_command
        else infer_command(checkpoint, datamodule, run_dir / "infer_example"),
        trainer=trainer,
        module=module,
        datamodule=datamodule,
        notes=notes + end_notes,
    )
    if trainer.is_global_zero:
        for line in _summary(result, time.perf_counter() - start, end_notes):
            print(line, flush=True)
    return result


def train(overrides: Sequence[str] = ()) -> TrainResult:
    """Compose ``train.yaml`` with ``overrides`` and train (``python train.py`` in Python).

    Example::

        train(["experiment=quickstart", "trainer.max_epochs=1"])

    Raises:
        TrainingConfigError: a config or input problem, found before training starts.
    """
    return run_training(compose_train_config(overrides))


def main(argv: Sequence[str] | None = None, prog: str = "train.py") -> int:
    """``python train.py`` (the Hydra app, :func:`.app.main`); returns the exit code."""
    from .app import main as app_main

    return app_main(argv, prog)
