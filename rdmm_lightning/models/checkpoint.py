r"""Loading checkpoints of the registration modules with one-line errors.

Safety. Checkpoints are read with ``torch.load(weights_only=True)`` (torch's restricted
unpickler: tensors, builtin containers and scalars only). This works for checkpoints written by
Lightning from these modules because their hyper-parameters are stored as plain builtin types
(:func:`~rdmm_lightning.models.hparams.plain` converts Hydra/OmegaConf containers before saving).
A checkpoint that holds other Python objects (e.g. an OmegaConf config saved by other code, or
a pickled callback state) fails with a clear message; pass ``trusted=True`` to fall back to
``weights_only=False`` — only for files you trust, since unpickling can run arbitrary code.
``LightningModule.load_from_checkpoint`` also works on its own (Lightning 2.6 forwards
``weights_only``; torch >= 2.6 defaults to ``True``).

Preprocessing. :func:`preprocessing_record` finds the data module's preprocessing record
(:class:`~rdmm_lightning.io.preprocessing.PreprocessingConfig`) in a checkpoint: the complete
record that :class:`datamodules.PairDataModule` keeps in its hyper-parameters
(``checkpoint["datamodule_hyper_parameters"]["preprocessing"]``). Checkpoints written before the
data module stored it still load: the record is then rebuilt from the preprocessing options of
the training config (``checkpoint["rdmm_config"]["data"]["preprocessing"]``, unknown keys
ignored), and is None without them.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ..io.preprocessing import PreprocessingConfig
from .base import CHECKPOINT_KEY, RegistrationModuleBase

__all__ = [
    "DATAMODULE_HPARAMS_KEY",
    "TRAINING_CONFIG_KEY",
    "CheckpointError",
    "preprocessing_record",
    "read_checkpoint",
    "load_registration_checkpoint",
]

TRAINING_CONFIG_KEY = "rdmm_config"
"""Checkpoint entry holding the resolved training config (a plain dict), written by the training
entry point (:class:`rdmm_lightning.training.callbacks.ConfigSnapshot`)."""
DATAMODULE_HPARAMS_KEY = "datamodule_hyper_parameters"
"""Checkpoint entry where Lightning stores the data module's hyper-parameters."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_checkpoint(
    path: str | os.PathLike, *, trusted: bool = False, map_location: Any = "cpu"
) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``weights_only=True`` unless ``trusted``)."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                f"{p}: checkpoint holds objects that cannot be loaded safely with "
                "weights_only=True (pass trusted=True only if you trust the file)"
            ) from None
        raise CheckpointError(f"{p}: unreadable checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{p}: unreadable checkpoint, truncated or corrupt ({_first_line(exc)})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{p}: not a Lightning checkpoint (no state_dict)")
    return ckpt


def _module_classes() -> dict[str, type[RegistrationModuleBase]]:
    from .affine_module import AffineNetModule
    from .registration_module import RegistrationNetModule

    return {"AffineNetModule": AffineNetModule, "RegistrationNetModule": RegistrationNetModule}


def _check_meta(
    p: Path,
    ckpt: dict[str, Any],
    expected_model: str | Collection[str] | None,
    expected_dim: int | None,
    expected_spacing_mode: str | None,
) -> tuple[type[RegistrationModuleBase], dict[str, Any]]:
    meta = ckpt.get(CHECKPOINT_KEY)
    classes = _module_classes()
    if not isinstance(meta, dict) or meta.get("module") not in classes:
        raise CheckpointError(
            f"{p}: not an rdmm-lightning model checkpoint (no {CHECKPOINT_KEY!r})"
        )
    model = meta.get("model")
    if expected_model is not None:
        allowed = {expected_model} if isinstance(expected_model, str) else set(expected_model)
        if model not in allowed:
            raise CheckpointError(
                f"{p}: checkpoint holds a {model!r} model, expected {' or '.join(sorted(allowed))}"
            )
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{p}: checkpoint has no hyper-parameters")
    shape = [int(n) for n in hparams.get("image_shape", [])]
    mode = hparams.get("spacing_mode")
    if shape != [int(n) for n in meta.get("image_shape", [])] or mode != meta.get("spacing_mode"):
        raise CheckpointError(
            f"{p}: grid settings mismatch: hyper-parameters say {shape} ({mode}), metadata says "
            f"{meta.get('image_shape')} ({meta.get('spacing_mode')})"
        )
    if expected_dim is not None and len(shape) != int(expected_dim):
        raise CheckpointError(
            f"{p}: grid settings mismatch: the model was trained on a {len(shape)}D grid "
            f"{tuple(shape)}, the inputs are {expected_dim}D"
        )
    if expected_spacing_mode is not None and mode != expected_spacing_mode:
        raise CheckpointError(
            f"{p}: grid settings mismatch: spacing mode {mode!r}, "
            f"expected {expected_spacing_mode!r}"
        )
    return classes[meta["module"]], hparams


def load_registration_checkpoint(
    path: str | os.PathLike,
    expected_model: str | Collection[str] | None = None,
    *,
    expected_dim: int | None = None,
    expected_spacing_mode: str | None = None,
    trusted: bool = False,
    map_location: Any = "cpu",
) -> RegistrationModuleBase:
    """Rebuild an :class:`AffineNetModule` or :class:`RegistrationNetModule` from a checkpoint.

    Args:
        path: the ``.ckpt`` file.
        expected_model: ``"affine"``, ``"svf"``, ``"lddmm"``, ``"rdmm"`` or a collection of them.
        expected_dim: required number of spatial dimensions of the training grid.
        expected_spacing_mode: required ``"parity"``/``"physical"``.
        trusted: allow ``weights_only=False`` (see the module docstring).
        map_location: where tensors are loaded.

    Returns:
        The module in eval mode, with its schedule attributes restored and ``preprocessing``
        set to the checkpoint's preprocessing record (:func:`preprocessing_record`; None
        without one).

    Raises:
        CheckpointError: one line: missing/truncated file, another model type, grid mismatch,
            weights that do not fit the model.
    """
    p = Path(os.fspath(path)).expanduser()
    ckpt = read_checkpoint(p, trusted=trusted, map_location=map_location)
    cls, hparams = _check_meta(p, ckpt, expected_model, expected_dim, expected_spacing_mode)
    try:
        module = cls(**hparams)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{p}: invalid hyper-parameters ({_first_line(exc)})") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: weights do not fit the model ({_first_line(exc)})") from None
    module.on_load_checkpoint(ckpt)
    try:
        module.preprocessing = preprocessing_record(ckpt)
    except ValueError as exc:
        raise CheckpointError(f"{p}: invalid training preprocessing ({_first_line(exc)})") from None
    return module.eval()


def preprocessing_record(ckpt: dict[str, Any]) -> PreprocessingConfig | None:
    """The preprocessing record of a checkpoint dict (see the module docstring), or None.

    Raises:
        ValueError: invalid record or training preprocessing options.
    """
    hparams = ckpt.get(DATAMODULE_HPARAMS_KEY)
    if isinstance(hparams, dict) and PreprocessingConfig.is_record(hparams.get("preprocessing")):
        return PreprocessingConfig.from_mapping(hparams["preprocessing"])
    # checkpoints written before the data module stored its record: the training config's
    # preprocessing options (as the data module read them), if any
    config = ckpt.get(TRAINING_CONFIG_KEY)
    data = config.get("data") if isinstance(config, dict) else None
    options = data.get("preprocessing") if isinstance(data, dict) else None
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ValueError(f"preprocessing must be a mapping; got {type(options).__name__}")
    known = {f.name for f in fields(PreprocessingConfig)}
    return PreprocessingConfig.from_mapping({k: v for k, v in options.items() if k in known})
