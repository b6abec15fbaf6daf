"""Named data presets: the YAML files in ``configs/data/`` (Hydra ``_target_`` configs).

Every key of a preset is a :class:`~datamodules.PairDataModule` constructor argument, so the same
files compose under Hydra (``data=ixi``) and load here without it (``load_preset("ixi")``).
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .pair_datamodule import PairDataModule

__all__ = ["config_dir", "preset_names", "preset_config", "load_preset"]

_RESERVED = {"_target_", "_convert_", "_recursive_", "_partial_"}


def config_dir() -> Path:
    """The folder holding the preset YAML files (``configs/data``, installed as the package data
    of ``rdmm_lightning.configs``)."""
    return Path(str(resources.files("rdmm_lightning.configs"))) / "data"


def preset_names() -> list[str]:
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def _arguments() -> set[str]:
    return set(inspect.signature(PairDataModule.__init__).parameters) - {"self"}


def preset_config(name: str, **overrides: Any) -> DictConfig:
    """The preset ``name`` with ``overrides`` merged (unresolved; env variables resolve later).

    Raises:
        ValueError: unknown preset, or a key (in the file or the overrides) that is not a
            PairDataModule argument.
    """
    file = config_dir() / f"{name}.yaml"
    if not file.is_file():
        raise ValueError(f"unknown data preset {name!r}; available: {preset_names()}")
    config = OmegaConf.load(file)
    allowed = _arguments()
    unknown = sorted(set(config) - allowed - _RESERVED)
    if unknown:
        raise ValueError(f"{file}: unknown option(s) {unknown}")
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown data option(s) {unknown} for preset {name!r}")
    return OmegaConf.merge(config, OmegaConf.create(overrides))


def load_preset(name: str, **overrides: Any) -> PairDataModule:
    """Instantiate the preset ``name`` (see :func:`preset_config`)."""
    return instantiate(preset_config(name, **overrides), _convert_="all")
