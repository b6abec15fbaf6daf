"""Checks that run before any long work: keys against schemas and constructor signatures, the
devices asked for, optional packages, the grid of the model against the data's, the optimiser
settings, and the checkpoint files named in the config.

Every failure is a :class:`~.errors.TrainingConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from .errors import TrainingConfigError
from .schema import CheckpointConfig, PathsConfig, TrainConfig, TrainerConfig

__all__ = [
    "check_config",
    "check_devices",
    "check_files",
    "check_grid",
    "check_optimizer",
    "check_optional_packages",
    "check_targets",
    "locate",
    "target_parameters",
]

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_SCHEMAS = {
    "": TrainConfig,
    "trainer": TrainerConfig,
    "paths": PathsConfig,
    "checkpoint": CheckpointConfig,
}


def _hint(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def locate(target: str) -> Any:
    """The object a dotted path names (``package.module.Class``), importing what it needs."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                raise
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(f"No module named {parts[0]!r}")


def target_parameters(target: str, where: str) -> set[str] | None:
    """Keyword arguments ``target`` accepts (None: any, it takes ``**kwargs``)."""
    try:
        obj = locate(target)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TrainingConfigError(
            f"{where}._target_: cannot import {target!r} ({type(exc).__name__}: {first})"
        ) from None
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _target_nodes(node: Any, where: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield where, node
        for key in node.keys():
            value = node._get_node(key)
            yield from _target_nodes(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            yield from _target_nodes(value, f"{where}[{i}]")


def check_targets(cfg: DictConfig) -> None:
    """Every key of every ``_target_`` node must be an argument of its target."""
    for where, node in _target_nodes(cfg, ""):
        target = str(node["_target_"])
        allowed = target_parameters(target, where)
        if allowed is None:
            continue
        for key in node.keys():
            if key in _HYDRA_KEYS or key in allowed:
                continue
            short = target.rsplit(".", 1)[-1]
            raise TrainingConfigError(
                f"unknown config key '{where}.{key}': not an argument of {short}"
                f"{_hint(str(key), sorted(allowed))}"
            )


def _check_schema_keys(cfg: DictConfig) -> None:
    """Keys added with ``+key=`` to the typed parts of the schema."""
    for prefix, schema in _SCHEMAS.items():
        node = cfg if not prefix else cfg.get(prefix)
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        for key in node.keys():
            if key not in known:
                full = f"{prefix}.{key}" if prefix else str(key)
                raise TrainingConfigError(
                    f"unknown config key '{full}'{_hint(str(key), sorted(known))}"
                )


def check_devices(trainer: DictConfig) -> None:
    """GPU trainers on a machine without enough GPUs fail here, naming ``trainer.devices``."""
    accelerator = str(trainer.accelerator).lower()
    if accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = trainer.devices
    if isinstance(devices, (list, tuple, ListConfig)):
        wanted = len(devices)
    elif str(devices) in ("-1", "auto"):
        wanted = max(available, 1)
    else:
        try:
            wanted = int(devices)
        except (TypeError, ValueError):
            raise TrainingConfigError(f"trainer.devices={devices!r} is not a count") from None
    if available == 0:
        raise TrainingConfigError(
            f"trainer.accelerator={accelerator} with trainer.devices={devices} needs CUDA GPUs, "
            "but none is available (use trainer=cpu, or trainer=ddp_cpu for CPU processes)"
        )
    if wanted > available:
        raise TrainingConfigError(
            f"trainer.devices={devices} but only {available} GPU(s) are visible"
        )


def check_optional_packages(cfg: DictConfig) -> None:
    """Loggers whose packages are not installed."""
    needs = {
        "WandbLogger": (("wandb",), "pip install 'rdmm-lightning[wandb]'"),
        "TensorBoardLogger": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    }
    for name, node in (cfg.logger or {}).items():
        target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
        for cls, (modules, how) in needs.items():
            if target.endswith(cls) and not any(importlib.util.find_spec(m) for m in modules):
                raise TrainingConfigError(
                    f"logger.{name} needs the {modules[0]} package, which is not installed "
                    f"({how}; or choose another logger, e.g. logger=csv)"
                )


_SYNTHETIC_DIMS = {"synth2d": 2, "synth3d": 3}


def _data_grid(data: DictConfig) -> tuple[list[int] | None, str | None]:
    """The grid the data comes on when the config fixes it (a preprocessing shape, else the size
    of a synthetic set), and the key that fixes it."""
    prep = data.get("preprocessing")
    for key in ("crop_or_pad_shape", "resize_shape"):  # CropOrPad runs last
        value = prep.get(key) if isinstance(prep, DictConfig) else None
        if value is not None:
            return [int(n) for n in value], f"data.preprocessing.{key}"
    options = data.get("synthetic_options") or {}
    if data.get("synthetic") == "synth2d" and options.get("size") is not None:
        return [int(options["size"])] * 2, "data.synthetic_options.size"
    if data.get("synthetic") == "synth3d" and options.get("shape") is not None:
        return [int(n) for n in options["shape"]], "data.synthetic_options.shape"
    return None, None


def check_grid(cfg: DictConfig) -> None:
    """``model.image_shape`` must be the grid of the data (checkpoints record it for inference),
    and a synthetic set keeps its number of dimensions."""
    if not isinstance(cfg.data, DictConfig) or not isinstance(cfg.model, DictConfig):
        return
    grid, key = _data_grid(cfg.data)
    if grid is None:
        return
    dims = _SYNTHETIC_DIMS.get(str(cfg.data.get("synthetic")))
    if dims is not None and len(grid) != dims:
        raise TrainingConfigError(
            f"{key}={grid} is {len(grid)}D but the {cfg.data.synthetic} data are {dims}D; set "
            f"{key} and model.image_shape to a {dims}D grid"
        )
    shape = cfg.model.get("image_shape")
    if shape is not None and [int(n) for n in shape] != grid:
        raise TrainingConfigError(
            f"model.image_shape={list(shape)} differs from the data grid {grid} ({key}); "
            "make them equal"
        )


def check_optimizer(model: Any) -> None:
    """``model.lr`` and ``model.refine_lr`` must be > 0, ``model.weight_decay`` >= 0 (when set)."""
    if not isinstance(model, DictConfig):
        return
    for key, strict in (("lr", True), ("refine_lr", True), ("weight_decay", False)):
        value = model.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # unset, or not a number: the constructor reports it
        if value < 0 or (strict and value == 0):
            bound = "> 0" if strict else ">= 0"
            raise TrainingConfigError(f"model.{key}={value} must be {bound}")


def check_files(cfg: DictConfig) -> None:
    """Checkpoint paths in the config must exist (``init_from``, ``ckpt_path``,
    ``model.affine_checkpoint``), and ``init_from`` and ``ckpt_path`` exclude each other."""
    affine = cfg.model.get("affine_checkpoint") if isinstance(cfg.model, DictConfig) else None
    for key, value in (
        ("init_from", cfg.init_from),
        ("ckpt_path", cfg.ckpt_path),
        ("model.affine_checkpoint", affine),
    ):
        if value and not Path(str(value)).expanduser().is_file():
            raise TrainingConfigError(f"{key}: file not found: {value}")
    if cfg.init_from and cfg.ckpt_path:
        raise TrainingConfigError(
            "set init_from (new training from these weights) or ckpt_path (resume), not both"
        )


def check_config(cfg: DictConfig) -> None:
    """All static checks (no file is read, nothing is built)."""
    _check_schema_keys(cfg)
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = exc.full_key
        raise TrainingConfigError(f"missing value for {key} (set {key}=... )") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        first = re.sub(r"^\w+ raised while resolving interpolation: ", "", first).strip('"')
        raise TrainingConfigError(f"{key}: {first} (set {key}=... )" if key else first) from None
    check_targets(cfg)
    check_devices(cfg.trainer)
    check_optional_packages(cfg)
    check_grid(cfg)
    check_optimizer(cfg.model)
