"""Composing the training config with Hydra's compose API from the installed config folder.

The config folder is the package data ``rdmm_lightning.configs`` (the repository's ``configs/``),
found with :func:`importlib.resources.files`, so composing works the same from a checkout, an
editable install and a plain ``pip install``. Composing changes no working directory and writes
nothing. :func:`~.run.train` (the Python API) composes here; ``python train.py`` (the Hydra app in
:mod:`.app`) composes here too, to check every job's overrides before Hydra starts.

Resuming (``ckpt_path=CKPT``) re-uses the command-line overrides stored in the checkpoint, with
the new ones on top (``ckpt_path=... trainer.max_epochs=50`` extends a run), and the run folder of
the checkpoint.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ..models.checkpoint import TRAINING_CONFIG_KEY
from .checks import target_parameters
from .errors import TrainingConfigError
from .rundir import register_run_dir_resolver, resume_folder, run_name
from .schema import register_schemas

__all__ = [
    "CONFIG_KEY",
    "OVERRIDES_KEY",
    "ComposedConfig",
    "compose_train_config",
    "config_root",
    "finish_config",
    "group_options",
    "parse_overrides",
    "resume_requested",
]

CONFIG_KEY = TRAINING_CONFIG_KEY
"""Checkpoint entry holding the resolved training config (a plain dict)."""
OVERRIDES_KEY = "rdmm_overrides"
"""Checkpoint entry holding the command-line overrides of the run (a list of str)."""

GROUPS = ("model", "data", "trainer", "logger", "callbacks", "experiment")


@dataclass
class ComposedConfig:
    """A composed config and what produced it.

    Attributes:
        cfg: the config (``name`` filled in, unresolved interpolations kept).
        overrides: the effective overrides (stored ones first when resuming).
        choices: the option chosen in each config group (e.g. ``{"model": "rdmm_net"}``).
    """

    cfg: DictConfig
    overrides: list[str]
    choices: dict[str, Any] = field(default_factory=dict)


def config_root() -> Path:
    """The installed config folder (``train.yaml`` and the group folders)."""
    return Path(str(resources.files("rdmm_lightning.configs")))


def group_options(group: str) -> list[str]:
    """Option names of a config group (the YAML files in ``<config_root>/<group>``)."""
    return sorted(p.stem for p in (config_root() / group).glob("*.yaml"))


# ------------------------------------------------------------------------------- overrides
def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's parse of command-line overrides (``hydra.core.override_parser`` objects)."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise TrainingConfigError(f"bad override: {_first_line(exc)}") from None


def _override_key(override: Any) -> str:
    return str(override.key_or_group)


def _merge_overrides(stored: Sequence[str], new: Sequence[str]) -> list[str]:
    """``stored`` then ``new``; a key given in ``new`` drops its stored entries."""
    new_keys = {_override_key(o) for o in parse_overrides(new)}
    parsed = parse_overrides(stored)
    kept = [text for text, o in zip(stored, parsed) if _override_key(o) not in new_keys]
    return kept + list(new)


def _value_of(overrides: Sequence[str], key: str) -> str | None:
    value = None
    for o in parse_overrides(overrides):
        if _override_key(o) == key and not o.is_delete():
            v = o.value()
            value = None if v is None else str(v)
    return value


def resume_requested(overrides: Sequence[str]) -> bool:
    """Whether the overrides resume a run (``ckpt_path=CKPT``)."""
    return _value_of(overrides, "ckpt_path") is not None


def _resume_overrides(overrides: list[str]) -> list[str]:
    """The stored overrides of ``ckpt_path``'s run plus ``overrides``, and its run folder."""
    ckpt_path = _value_of(overrides, "ckpt_path")
    if ckpt_path is None:
        return overrides
    from ..models.checkpoint import CheckpointError, read_checkpoint

    path = Path(os.path.expanduser(ckpt_path))
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as exc:
        raise TrainingConfigError(f"ckpt_path: {exc}") from None
    stored = [str(s) for s in ckpt.get(OVERRIDES_KEY) or []]
    dropped = ("ckpt_path", "init_from", "paths.run_dir")  # the run folder is where CKPT lies
    stored = [s for s in stored if _override_key(parse_overrides([s])[0]) not in dropped]
    merged = _merge_overrides(stored, overrides)
    run_dir = resume_folder(path)
    if run_dir is not None and _value_of(merged, "paths.run_dir") is None:
        merged.append(f"paths.run_dir={_quote(str(run_dir))}")
    return merged


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------------- errors
def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key_error(key: str, overrides: Sequence[str]) -> TrainingConfigError:
    """``key`` is not in the composed config: suggest a near key, or ``+key=`` when ``key`` is a
    constructor argument that the config file does not list."""
    parent_key, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if _override_key(parse_overrides([o])[0]) != key]
    try:
        cfg, _ = _compose(rest)
    except TrainingConfigError:
        return TrainingConfigError(f"unknown config key {key!r}")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, DictConfig) and leaf in parent and isinstance(parent[leaf], DictConfig):
        # the key exists: the new mapping brings keys the old one lacks (merged, not replaced)
        return TrainingConfigError(
            f"{key!r} is a mapping and overrides merge into it; to replace it with other keys "
            f"use ~{key} +{key}=VALUE"
        )
    options = [str(k) for k in parent.keys()] if isinstance(parent, DictConfig) else []
    if isinstance(parent, DictConfig) and "_target_" in parent:
        allowed = target_parameters(str(parent["_target_"]), parent_key) or set()
        if leaf in allowed:
            return TrainingConfigError(
                f"{key!r} is not in the config file; add it with +{key}=VALUE"
            )
        options = sorted(allowed)
    return TrainingConfigError(f"unknown config key {key!r}{_suggest(leaf, options)}")


def _translate(exc: BaseException, overrides: Sequence[str]) -> TrainingConfigError:
    """A one-line error for the Hydra/OmegaConf failures users cause."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    detail = _first_line(cause) if cause is not None else ""
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if isinstance(exc, MissingConfigException) and missing:
        group, option = missing.groups()
        options = group_options(group)
        return TrainingConfigError(
            f"unknown {group} {option!r}{_suggest(option, options)}; "
            f"available: {', '.join(options)}"
        )
    override = re.search(r"Could not override '([^']+)'", text)
    if override and ("not in" in detail or "Key '" in detail):
        return _unknown_key_error(override.group(1), overrides)
    if text.startswith("Ambiguous value for argument"):
        return TrainingConfigError(
            f"{_first_line(exc)}: a list is key=[a,b], a string key='a,b', a sweep needs -m"
        )
    merging = re.search(r"Error merging override (\S+)", text)
    if merging and detail:
        return TrainingConfigError(f"cannot apply {merging.group(1)}: {detail}")
    return TrainingConfigError(_first_line(exc) + (f": {detail}" if detail else ""))


# --------------------------------------------------------------------------------- compose
def _compose(overrides: list[str]) -> tuple[DictConfig, dict[str, Any]]:
    register_schemas()
    register_run_dir_resolver()
    running = GlobalHydra.instance().hydra  # the Hydra app's, when a job composes (resume)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_root()), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise _translate(exc, overrides) from None
    finally:
        GlobalHydra.instance().hydra = running
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if k in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def compose_train_config(overrides: Sequence[str] = ()) -> ComposedConfig:
    """Compose ``train.yaml`` with ``overrides`` (Hydra override grammar).

    Raises:
        TrainingConfigError: unknown group option or key, bad value or syntax, unreadable
            ``ckpt_path``. (Unset ``???`` values and failing interpolations are reported by
            :func:`~.checks.check_config`.)
    """
    effective = _resume_overrides(list(overrides))
    cfg, choices = _compose(effective)
    finish_config(cfg, choices)
    return ComposedConfig(cfg, effective, choices)


def finish_config(cfg: DictConfig, choices: dict[str, Any]) -> None:
    """Fill in ``name`` (:func:`~.rundir.run_name`) and check that it can name a folder."""
    cfg.name = run_name(cfg.name, choices)
    if not re.fullmatch(r"[\w.+-]+", str(cfg.name)):
        raise TrainingConfigError(
            f"name {cfg.name!r}: use letters, digits and . _ + - only (it names a folder)"
        )
