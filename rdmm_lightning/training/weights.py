"""Checkpoints as the start of a run: ``init_from`` (weights only) and the ``ckpt_path`` check.

``init_from=CKPT`` copies the checkpoint's weights into the freshly built module: training then
starts at epoch 0 with a new optimiser and scheduler, under the current config. ``ckpt_path=CKPT``
resumes instead (Lightning restores epoch, step, optimiser, scheduler and callback states). Both
first check that the checkpoint holds the same kind of model as the config builds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from ..models import CHECKPOINT_KEY
from ..models.checkpoint import CheckpointError, read_checkpoint
from .compose import CONFIG_KEY
from .errors import TrainingConfigError

__all__ = ["check_same_model", "init_weights", "read_training_checkpoint"]


def read_training_checkpoint(path: str | os.PathLike, option: str) -> dict[str, Any]:
    """The checkpoint dict (safe loading), or an error naming ``option``."""
    try:
        return read_checkpoint(Path(os.path.expanduser(os.fspath(path))))
    except CheckpointError as exc:
        raise TrainingConfigError(f"{option}: {exc}") from None


def _describe(module: pl.LightningModule) -> tuple[str, str]:
    return type(module).__name__, str(getattr(module, "model_name", "") or "")


def check_same_model(ckpt: dict[str, Any], module: pl.LightningModule, option: str) -> None:
    """The checkpoint must come from the same module class and model (svf/lddmm/rdmm/affine)."""
    meta = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(meta, dict):
        target = ((ckpt.get(CONFIG_KEY) or {}).get("model") or {}).get("_target_")
        what = f"a {target} model" if target else "no rdmm-lightning model metadata"
        raise TrainingConfigError(f"{option}: the checkpoint holds {what}")
    cls, model = _describe(module)
    if meta.get("module") != cls or str(meta.get("model") or "") != model:
        raise TrainingConfigError(
            f"{option}: the checkpoint holds a {meta.get('model')!r} model "
            f"({meta.get('module')}), but this run trains {model!r} ({cls})"
        )


def _shape_report(state: dict[str, Any], own: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    return missing, unexpected, mismatched


def init_weights(
    module: pl.LightningModule, path: str | os.PathLike, strict: bool = True
) -> list[str]:
    """Load the weights of checkpoint ``path`` into ``module`` (``init_from``).

    With ``strict`` every weight must exist in both with the same shape; otherwise the matching
    ones are loaded and the others reported (returned as note lines).

    Raises:
        TrainingConfigError: unreadable file, another model, weights that do not fit (strict).
    """
    ckpt = read_training_checkpoint(path, "init_from")
    if strict:
        check_same_model(ckpt, module, "init_from")
    state = ckpt["state_dict"]
    own = module.state_dict()
    missing, unexpected, mismatched = _shape_report(state, own)
    problems = [
        f"{len(v)} {what} (e.g. {v[0]})"
        for v, what in (
            (missing, "weights missing from the checkpoint"),
            (unexpected, "weights the model does not have"),
            (mismatched, "weights of another shape"),
        )
        if v
    ]
    if problems and strict:
        raise TrainingConfigError(
            f"init_from: the weights do not fit the model: {'; '.join(problems)} "
            "(init_from_strict=false loads the matching weights only)"
        )
    keep = {k: v for k, v in state.items() if k in own and k not in mismatched}
    module.load_state_dict(keep, strict=False)
    notes = [f"init_from: loaded {len(keep)} weight tensors from {path}"]
    notes += [f"init_from: skipped {p}" for p in problems]
    return notes
