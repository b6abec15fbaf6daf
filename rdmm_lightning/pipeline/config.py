"""Options of ``rdmm register``: defaults, a named preset, a YAML file, command-line flags and
``key=value`` overrides, merged with OmegaConf (later sources win) and checked against one schema.

A preset (``preset``: :class:`~rdmm_lightning.options.Preset`, the YAML package data of
:mod:`rdmm_lightning.presets`) is named by any source (``--preset``, ``preset: brain`` in a config
file, ``preset=brain``; the last one wins) and always layers just above the defaults:
defaults < preset < config < flags < overrides (:func:`resolve_register_config`).

The schema's defaults come from the optimisers' own signatures and default constants
(:mod:`rdmm_lightning.optimize`), so they are written down once. Top-level keys:

* pipeline: ``preset``, ``model``, ``similarity``, ``similarity_kwargs`` (free mapping),
  ``regularizer``, ``region_mask``, ``region`` (``inside``/``outside`` ``h^2`` of the predefined
  regularizer), ``max_time``, ``device`` (``auto``: CUDA when available, else ``cpu``; resolved
  here), ``threads`` (None: automatic, see :func:`rdmm_lightning.runtime.choose_num_threads`),
  ``spacing_mode``, ``normalize``, ``working_shape``, ``affine``;
* ``affine_options``: keyword arguments of :func:`rdmm_lightning.optimize.optimize_affine`
  (``lbfgs`` as a mapping);
* every keyword argument of :func:`rdmm_lightning.optimize.optimize_deformable` that is not
  pipeline-managed (``sigmas``, ``iterations``, ``energy_weight``, ``solver.num_steps``, ...).

One list holds the pipeline keys (:data:`REGISTER_DEFAULTS`, plus ``affine_options``); the
optimiser keys are what the optimisers' signatures add to it, less the arguments the pipeline
sets for each pair (:data:`PER_PAIR_ARGUMENTS`). :func:`optimizer_arguments` splits a resolved
config back along the same line.

Unknown keys raise a one-line ``ValueError`` that names the key and where it came from; checks
of values that a command-line flag may set raise :class:`OptionError`, which a caller can
re-word with its own option names (``--max-time`` for ``max_time``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..options import (
    IntensityNormalization,
    Model,
    Preset,
    Regularizer,
    Similarity,
    SpacingMode,
    StrOption,
    values,
)

__all__ = [
    "LUNG_REGION",
    "PER_PAIR_ARGUMENTS",
    "PIPELINE_KEYS",
    "REGISTER_DEFAULTS",
    "OptionError",
    "config_yaml",
    "default_register_config",
    "load_preset",
    "optimizer_arguments",
    "resolve_register_config",
]


class OptionError(ValueError):
    """A bad option value; the message names the option(s) through ``render``, so that a caller
    can name them its own way (:meth:`named`, e.g. with command-line flags)."""

    def __init__(self, options: Sequence[str], render: Callable[[list[str]], str]) -> None:
        self.options = list(options)
        self.render = render
        super().__init__(render(self.options))

    def named(self, names: Mapping[str, str]) -> str:
        """The message with each option renamed by ``names`` (unknown ones kept)."""
        return self.render([names.get(o, o) for o in self.options])


LUNG_REGION: dict[str, list[float]] = {
    "sigmas": [0.04, 0.06, 0.08, 0.2],
    "inside": [0.1, 0.4, 0.5, 0.0],
    "outside": [0.0, 0.0, 0.0, 1.0],
}
"""The paper's lung setting of the predefined regularizer (``h^2`` inside/outside the mask)."""

REGISTER_DEFAULTS: dict[str, Any] = {
    "preset": None,
    "model": "rdmm",
    "similarity": "lncc",
    "similarity_kwargs": {},
    "regularizer": "optimized",
    "region_mask": None,
    "region": {"inside": LUNG_REGION["inside"], "outside": LUNG_REGION["outside"]},
    "max_time": None,
    "device": "auto",
    "threads": None,
    "spacing_mode": "parity",
    "normalize": "percentile",
    "working_shape": None,
    "affine": True,
}
"""Pipeline-level defaults (the optimiser options are added by :func:`default_register_config`)."""

PIPELINE_KEYS = (*REGISTER_DEFAULTS, "affine_options")
"""Top-level keys that are not keyword arguments of the deformable optimiser."""

PER_PAIR_ARGUMENTS = (
    "spacing",
    "initial_map",
    "initial_forward",
    "pre_weights",
    "progress",
    "mask",
)
"""Optimiser keyword arguments that the pipeline computes for each pair (never options)."""

# mappings whose keys are free (passed through to constructors)
_OPEN = {"similarity_kwargs", "affine_options.similarity_kwargs"}


def _plain(value: Any) -> Any:
    """Defaults as plain YAML values (tuples -> lists, dataclasses -> dicts, option enums ->
    their strings)."""
    if isinstance(value, StrOption):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _keyword_defaults(fn, own: Iterable[str] = ()) -> dict[str, Any]:
    """Keyword-only defaults of an optimiser, less the per-pair arguments and the pipeline
    keys (except ``own``: keys the optimiser stage keeps its own value of)."""
    skip = (set(PER_PAIR_ARGUMENTS) | set(REGISTER_DEFAULTS)) - set(own)
    return {
        name: _plain(p.default)
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip
    }


def default_register_config() -> dict[str, Any]:
    """The full default configuration (a fresh plain dict)."""
    from ..optimize import LbfgsOptions, optimize_affine, optimize_deformable
    from ..optimize import defaults as D
    from ..shooting import SolverOptions

    cfg = _plain(REGISTER_DEFAULTS)
    affine = _keyword_defaults(optimize_affine, own=("similarity_kwargs",))
    affine["similarity"] = None  # None: the top-level similarity
    affine["similarity_kwargs"] = {}
    affine["lbfgs"] = _plain(LbfgsOptions())
    cfg["affine_options"] = affine
    deformable = _keyword_defaults(optimize_deformable)
    deformable["solver"] = _plain(SolverOptions("rk4", D.DEFAULT_NUM_STEPS))
    deformable["lbfgs"] = _plain(LbfgsOptions())
    cfg.update(deformable)
    return cfg


def optimizer_arguments(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(affine_kwargs, deformable_kwargs)`` of :func:`rdmm_lightning.optimize.register_tensors`
    from a resolved config (without ``pre_weights``, ``progress`` and ``max_time``)."""
    from ..optimize import LbfgsOptions
    from ..shooting import SolverOptions

    aff = dict(cfg["affine_options"])
    aff["similarity"] = aff["similarity"] or cfg["similarity"]
    if not aff["similarity_kwargs"] and aff["similarity"] == cfg["similarity"]:
        aff["similarity_kwargs"] = dict(cfg["similarity_kwargs"])
    aff["similarity_kwargs"] = aff["similarity_kwargs"] or None
    aff["lbfgs"] = LbfgsOptions(**aff["lbfgs"])
    if cfg["model"] == "affine":
        return aff, {}
    deformable = {k: v for k, v in cfg.items() if k not in PIPELINE_KEYS}
    deformable["similarity"] = cfg["similarity"]
    deformable["similarity_kwargs"] = dict(cfg["similarity_kwargs"]) or None
    deformable["regularizer"] = cfg["regularizer"]
    deformable["solver"] = SolverOptions(**cfg["solver"])
    deformable["lbfgs"] = LbfgsOptions(**cfg["lbfgs"])
    return aff, deformable


# ---------------------------------------------------------------------------------------------
# checking keys and value types against the defaults


def _flat_keys(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in _OPEN:
            yield from _flat_keys(value, path + ".")
        else:
            yield path, value


def _lookup(tree: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def _check_against(defaults: Mapping[str, Any], user: Mapping[str, Any], origin: str) -> None:
    """Raise ValueError for keys of ``user`` missing in ``defaults`` or values of a wrong kind."""
    for path, value in _flat_keys(user):
        known, default = _lookup(defaults, path)
        if not known:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            if parent in _OPEN:
                continue
            raise ValueError(f"unknown option {path!r} ({origin})")
        if default is None or value is None:
            continue
        want, got = _kind(default), _kind(value)
        # lists of per-scale values also accept one number (e.g. iterations=20)
        if want == got or (want == "list" and got == "number"):
            continue
        if isinstance(default, Mapping) and not isinstance(value, Mapping):
            raise ValueError(f"option {path!r} is a group of options, not a value ({origin})")
        raise ValueError(f"option {path!r} must be a {want}; got {value!r} ({origin})")


# ---------------------------------------------------------------------------------------------
# sources


def _load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    from omegaconf import OmegaConf

    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"{name}: config file not found")
    try:
        loaded = OmegaConf.load(name)
    except Exception as exc:  # yaml.YAMLError and OmegaConf errors
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"{name}: invalid YAML ({first})") from None
    data = OmegaConf.to_container(loaded, resolve=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{name}: the config must be a mapping of options")
    return data


def _parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    items = list(overrides)
    for item in items:
        key = item.split("=", 1)[0]
        if "=" not in item or not key or key.startswith("-"):
            raise ValueError(f"override {item!r} must be key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(items), resolve=False)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"cannot parse overrides {' '.join(items)} ({first})") from None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"solver.num_steps": 5}`` -> ``{"solver": {"num_steps": 5}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _plain(value)
    return out


def resolve_register_config(
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    explicit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge defaults < the preset < ``config`` (YAML file or mapping) < ``explicit`` (flags and
    keyword arguments; None values are skipped; dotted keys allowed) < ``overrides``
    (``key=value``). The preset is the ``preset`` key of the last of these sources that sets it.

    Returns the resolved plain dict, with model-dependent defaults filled in (the sigma stack,
    kernel weights, initial pre-weights) and ``preset`` the preset's name (or None). Raises
    ValueError (one line) for unknown keys or presets, values of the wrong kind and invalid
    choices.
    """
    from omegaconf import OmegaConf

    defaults = default_register_config()
    layers: list[dict[str, Any]] = []
    if config is not None:
        if isinstance(config, Mapping):
            data, origin = _plain(dict(config)), "in config"
        else:
            data, origin = _load_yaml(config), f"in {os.fspath(config)}"
        _check_against(defaults, data, origin)
        layers.append(data)
    if explicit:
        data = _nest({k: v for k, v in explicit.items() if v is not None})
        _check_against(defaults, data, "argument")
        layers.append(data)
    items = list(overrides)
    if items:
        data = _parse_overrides(items)
        _check_against(defaults, data, "override")
        layers.append(data)
    name = next((layer["preset"] for layer in reversed(layers) if "preset" in layer), None)
    preset = [] if name is None else [load_preset(name)]
    merged = OmegaConf.to_container(OmegaConf.merge(defaults, *preset, *layers), resolve=True)
    merged["preset"] = None if name is None else str(name)
    return _finalize(merged)


def load_preset(name: str) -> dict[str, Any]:
    """The options of the preset ``name`` (:class:`~rdmm_lightning.options.Preset`), checked
    against the schema; one-line ValueError for an unknown name."""
    from omegaconf import OmegaConf

    from ..presets import preset_text

    if name not in values(Preset):
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(values(Preset))}")
    origin = f"in preset {name!s}"
    data = OmegaConf.to_container(OmegaConf.create(preset_text(str(name))), resolve=False)
    if not isinstance(data, dict) or "preset" in data:
        raise ValueError(f"preset {name!s} must be a mapping of options other than 'preset'")
    defaults = default_register_config()
    _check_against(defaults, data, origin)
    return data


def config_yaml(cfg: Mapping[str, Any]) -> str:
    """A resolved config as YAML text (keys in schema order), a valid ``--config`` file."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_plain(dict(cfg))))


def _finalize(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate choices and fill the model-dependent defaults."""
    from ..optimize import defaults as D

    choices: dict[str, type[StrOption]] = {
        "model": Model,
        "similarity": Similarity,
        "regularizer": Regularizer,
        "spacing_mode": SpacingMode,
        "normalize": IntensityNormalization,
    }
    for key, option in choices.items():
        allowed = values(option)
        if cfg[key] not in allowed:
            text = f"must be one of {', '.join(allowed)}; got {cfg[key]!r}"
            raise OptionError([key], lambda n, text=text: f"option {n[0]!r} {text}")
    aff_sim = cfg["affine_options"]["similarity"]
    if aff_sim is not None and aff_sim not in values(Similarity):
        raise ValueError(
            f"option 'affine_options.similarity' must be one of {', '.join(values(Similarity))}; "
            f"got {aff_sim!r}"
        )
    _resolve_runtime(cfg)
    if cfg["max_time"] is not None and not cfg["max_time"] > 0:
        text = f"must be a positive number of seconds; got {cfg['max_time']}"
        raise OptionError(["max_time"], lambda n: f"option {n[0]!r} {text}")
    model, predefined = cfg["model"], cfg["regularizer"] == "predefined"
    if predefined and model != "rdmm":
        raise ValueError(f"regularizer 'predefined' needs model 'rdmm'; got model {model!r}")
    if predefined and not cfg["region_mask"]:
        raise ValueError("regularizer 'predefined' needs a region mask (--region-mask F)")
    if cfg["region_mask"] and model != "rdmm":
        raise ValueError(f"a region mask applies to model 'rdmm' only; got model {model!r}")
    if model == "affine" and not cfg["affine"]:
        raise ValueError("model 'affine' needs affine=true")
    if cfg["sigmas"] is None:
        if model == "rdmm":
            cfg["sigmas"] = list(LUNG_REGION["sigmas"] if predefined else D.DEFAULT_RDMM_SIGMAS)
        else:
            cfg["sigmas"] = list(D.DEFAULT_SIGMAS)
            if cfg["kernel_weights"] is None:
                cfg["kernel_weights"] = list(D.DEFAULT_KERNEL_WEIGHTS)
    if model == "rdmm" and cfg["initial_h2"] is None and not cfg["region_mask"]:
        cfg["initial_h2"] = list(D.DEFAULT_RDMM_INITIAL_H2)
    _check_stack(cfg)
    _check_optimizers(cfg)
    return cfg


def _check_optimizers(cfg: dict[str, Any]) -> None:
    """Every optimiser option checked as the optimisers will (one-line errors), so that e.g. a
    list with one entry too few fails now, not after the affine stage."""
    from ..optimize.affine import check_affine_options
    from ..optimize.deformable import check_deformable_options

    aff, deformable = optimizer_arguments(cfg)  # L-BFGS and solver settings checked here
    if cfg["model"] != "affine":
        check_deformable_options(cfg["model"], deformable)
    if cfg["affine"]:
        try:
            check_affine_options(aff)
        except ValueError as exc:
            raise ValueError(f"affine_options: {exc}") from None


def _resolve_runtime(cfg: dict[str, Any]) -> None:
    """``device`` -> the device it names (``auto`` resolved); ``threads`` checked (and, when
    None, ``RDMM_NUM_THREADS``), both one-line errors."""
    from ..runtime import requested_threads, resolve_device

    device = str(cfg["device"])
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"option 'device' must be auto, cpu, cuda or cuda:N; got {device!r}")
    cfg["device"] = str(resolve_device(device))
    threads = cfg["threads"]
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"option 'threads' must be an integer >= 1; got {threads!r}")
    if threads is None:
        requested_threads(None)  # a bad RDMM_NUM_THREADS fails before any work


def _check_stack(cfg: dict[str, Any]) -> None:
    """Cross-option checks of the sigma stack, before any work is done."""
    if cfg["model"] != "rdmm":
        return
    if cfg["kernel_weights"] is not None:
        raise ValueError("option 'kernel_weights' applies to svf/lddmm; RDMM uses pre-weights")
    n = len(cfg["sigmas"]) if isinstance(cfg["sigmas"], list) else 1
    sized = {"initial_h2": cfg["initial_h2"]}
    if cfg["region_mask"]:
        sized.update(
            {"region.inside": cfg["region"]["inside"], "region.outside": cfg["region"]["outside"]}
        )
    for key, value in sized.items():
        if isinstance(value, list) and len(value) != n:
            raise ValueError(
                f"option {key!r} needs one entry per sigma ({n}: {cfg['sigmas']}); got {value}"
            )
