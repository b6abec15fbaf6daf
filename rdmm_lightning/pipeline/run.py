"""The one orchestrator: ``rdmm register``, ``rdmm infer``, ``rdmm evaluate`` and the Python API
are compositions of the same stages.

* read + prepare — :func:`~.pair.prepare_pair` (options of :mod:`.config`) or
  :meth:`~.network.Network.prepare` (a checkpoint's preprocessing record);
* register or predict — :func:`~.register.register_pair` (numerical optimisation) or
  :meth:`~.network.Network.predict` (a trained network);
* write — :func:`~.outputs.compute_registration_outputs` and, with an output folder,
  :func:`~.outputs.save_registration_outputs` (all or nothing).

:func:`register` and :func:`infer` return the working-grid
:class:`~rdmm_lightning.result.RegistrationResult` with ``extras["metrics"]``,
``extras["config"]``, ``extras["outputs"]`` and ``extras["pair"]``; :func:`register_files` and
:func:`infer_files` are the commands (files in, folder out; ``register_files`` returns the
metrics, ``infer_files`` the result, which :func:`rdmm_lightning.api.infer` is). The output
folder is checked before any work and written only at the end, so a bad input or option leaves
no output folder behind; while a command works, the folder is locked against a second one
(:func:`~.atomic.output_lock`). :func:`register_batch` registers a batch of tensor pairs on one
grid (no files).

**Time limit.** ``max_time`` bounds the whole of :func:`register`: its clock starts before the
images are read (``started``: earlier, e.g. when the process started, for a command), and the
optimisation gets what is left less a reserve for writing the outputs, estimated from the time
reading took (:data:`WRITE_RESERVE`). The optimisers split their part across stages and scales
(:mod:`rdmm_lightning.optimize.budget`). ``metrics.json`` records per stage and scale the
iterations planned and done and why each ended (``"stages"``), and the budget
(``"time_limit"``). A deformable model whose stage ran 0 iterations is reported as the affine
result it is (``"model": "affine"``, ``"requested_model"``, ``"complete": false``) with an
:class:`IncompleteRegistration` warning.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from ..optimize.progress import Deadline
from ..result import RegistrationResult
from ..runtime import resolve_device
from .atomic import check_output_dir, output_lock
from .config import resolve_register_config
from .network import Network, load_network
from .outputs import compute_registration_outputs, dice_summary, save_registration_outputs
from .pair import PreparedPair, VolumeLike, normalize_intensities, prepare_pair
from .register import region_pre_weights, register_pair, register_working
from .tensors import as_batch

__all__ = [
    "WRITE_RESERVE",
    "IncompleteRegistration",
    "incomplete_message",
    "infer",
    "infer_files",
    "register",
    "register_batch",
    "register_files",
]

PathLike = str | os.PathLike

WRITE_RESERVE = (2.0, 5.0)
"""``(a, b)``: seconds kept back from the optimisation for the outputs (computing and writing
them, and the process's exit): ``a + b * t_read``, ``t_read`` the time reading and preparing
the pair took (writing compresses and resamples grids of the same sizes). Measured on a busy
2-core CPU, outputs and exit took 3.8 s after a 0.67 s read (48x64x64 volumes) and 11 s after
a 1.6 s read (120x120x90)."""


class IncompleteRegistration(UserWarning):
    """The result is not the model asked for (its deformable stage ran 0 iterations)."""


def incomplete_message(metrics: Mapping[str, Any]) -> str | None:
    """The one-line warning for metrics of an incomplete registration, else None."""
    if metrics.get("complete", True):
        return None
    requested = metrics["requested_model"]
    reasons = [
        r["stopped"]
        for r in metrics.get("stages", ())
        if r["stage"] == requested and r["stopped"] != "not run"
    ]
    why = f" ({reasons[0]})" if reasons else ""
    return (
        f"the {requested} stage ran 0 iterations{why}: the outputs are the {metrics['model']} "
        "registration only"
    )


def _finish(
    pair: PreparedPair,
    result: RegistrationResult,
    config: dict[str, Any],
    out_dir: PathLike | None,
    budget: dict[str, Any] | None = None,
) -> RegistrationResult:
    """The write stage: outputs on the input grids and metrics (``config`` recorded in them,
    and the per-scale ``stages`` records and the time ``budget`` when there are), saved into
    ``out_dir`` when given; all of it attached to ``result.extras``."""
    outputs = compute_registration_outputs(pair, result, config=config)
    metrics = outputs.metrics
    requested = config.get("model", result.model)
    metrics.update(requested_model=requested, complete=result.model == requested)
    if "stages" in result.extras:
        metrics["stages"] = [dict(r) for r in result.extras["stages"]]
    if budget is not None:
        metrics["time_limit"] = budget
    message = incomplete_message(metrics)
    if message is not None:
        warnings.warn(message, IncompleteRegistration, stacklevel=3)
    if out_dir is not None:
        save_registration_outputs(out_dir, pair, result, outputs)
    result.extras.update(metrics=outputs.metrics, config=config, outputs=outputs, pair=pair)
    return result


def register(
    source: VolumeLike,
    target: VolumeLike,
    cfg: dict[str, Any],
    *,
    out_dir: PathLike | None = None,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    region_mask: VolumeLike | None = None,
    progress: bool = False,
    started: float | None = None,
) -> RegistrationResult:
    """Register a pair (files or Volumes) by numerical optimisation with the resolved options
    ``cfg`` (:func:`~.config.resolve_register_config`); ``region_mask`` (source space) gives the
    predefined regularizer's pre-weights. Writes ``out_dir`` when given (locked meanwhile).
    ``cfg["max_time"]`` bounds the whole call, its clock started at ``started`` (a
    ``time.perf_counter()`` value; default now; see the module docstring)."""
    deadline = Deadline(cfg["max_time"], start=started)
    if out_dir is not None:
        check_output_dir(out_dir)
    resolve_device(cfg["device"])
    with _locked(out_dir):
        reading = time.perf_counter()
        pair = prepare_pair(
            source,
            target,
            source_label=source_label,
            target_label=target_label,
            working_shape=cfg["working_shape"],
            working_spacing_mode=cfg["spacing_mode"],
            normalize=cfg["normalize"],
        )
        pre_weights = None
        if region_mask is not None and region_mask != "":
            inside, outside = cfg["region"]["inside"], cfg["region"]["outside"]
            pre_weights = region_pre_weights(pair, region_mask, inside, outside)
        read_s = time.perf_counter() - reading
        reserve = WRITE_RESERVE[0] + WRITE_RESERVE[1] * read_s
        result = register_pair(
            pair, cfg, progress=progress, pre_weights=pre_weights, deadline=deadline.less(reserve)
        )
        budget = None
        if deadline.max_time is not None:
            budget = {
                "max_time_s": deadline.max_time,
                "read_s": read_s,
                "write_reserve_s": reserve,
                "elapsed_before_writing_s": deadline.elapsed(),
                "final_shoot_s": result.extras.get("final_s"),
            }
        return _finish(pair, result, cfg, out_dir, budget)


def _locked(out_dir: PathLike | None):
    """The output folder's lock (:func:`~.atomic.output_lock`), or nothing without a folder."""
    return nullcontext() if out_dir is None else output_lock(out_dir)


def infer(
    network: Network,
    source: VolumeLike,
    target: VolumeLike,
    *,
    out_dir: PathLike | None = None,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
) -> RegistrationResult:
    """Register a pair (files or Volumes) with a loaded network (:func:`~.network.load_network`);
    writes ``out_dir`` when given (locked meanwhile)."""
    if out_dir is not None:
        check_output_dir(out_dir)
    with _locked(out_dir):
        pair = network.prepare(source, target, source_label=source_label, target_label=target_label)
        result = network.predict(pair)
        return _finish(pair, result, network.config(result.extras.get("num_steps")), out_dir)


def register_files(
    source: PathLike,
    target: PathLike,
    out_dir: PathLike,
    *,
    model: str | None = None,
    source_label: PathLike | None = None,
    target_label: PathLike | None = None,
    similarity: str | None = None,
    regularizer: str | None = None,
    region_mask: PathLike | None = None,
    max_time: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    config: PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
    started: float | None = None,
) -> dict[str, Any]:
    """``rdmm register``: register ``source`` to ``target`` (image files) and write ``out_dir``;
    returns the metrics. ``max_time`` bounds the whole call from ``started`` (a
    ``time.perf_counter()`` value, default now; the command passes its process's start).

    Options are resolved as defaults < ``config`` (YAML file or mapping) < the keyword
    arguments given here (None: not given; defaults ``model="rdmm"``, ``similarity="lncc"``,
    ``regularizer="optimized"``, ``device="auto"``, ``threads`` automatic) < ``overrides``
    (``"key=value"`` strings). ``region_mask`` (a mask in the source's space) gives the
    per-region pre-weights of ``regularizer="predefined"`` (paper lung setting by default, keys
    ``region.inside`` and ``region.outside``).

    Raises:
        ValueError: one line naming the file or option at fault; nothing is written then.
    """
    check_output_dir(out_dir)
    explicit = {
        "model": model,
        "similarity": similarity,
        "regularizer": regularizer,
        "region_mask": None if region_mask is None else os.fspath(region_mask),
        "max_time": max_time,
        "device": device,
        "threads": threads,
    }
    cfg = resolve_register_config(config, overrides, explicit)
    result = register(
        source,
        target,
        cfg,
        out_dir=out_dir,
        source_label=source_label,
        target_label=target_label,
        region_mask=cfg["region_mask"],
        progress=progress,
        started=started,
    )
    return result.extras["metrics"]


def infer_files(
    checkpoint: PathLike,
    source: VolumeLike,
    target: VolumeLike,
    out: PathLike | None,
    *,
    source_label: VolumeLike | None = None,
    target_label: VolumeLike | None = None,
    num_steps: int | None = None,
    refine_steps: int = 0,
    device: str | None = "auto",
    threads: int | None = None,
    affine: str | None = None,
    network_precision: str | None = None,
    compile_shooting: bool = False,
) -> RegistrationResult:
    """``rdmm infer`` and :func:`rdmm_lightning.api.infer`: register two images (files or
    Volumes) with a checkpoint and write ``out`` (None: nothing written); returns the result,
    its metrics in ``extras["metrics"]``. Options as for :func:`~.network.load_network`
    (``affine``: the affine stage, ``"net"``, ``"opt"`` or ``"none"``; default ``"net"`` when
    the checkpoint has one; ``network_precision``: ``"auto"``, ``"float32"`` or ``"bfloat16"``;
    ``compile_shooting``: the shooting right-hand side through ``torch.compile``).

    Raises:
        ValueError: one line for every user error (checkpoint, inputs, options; bad options as
            :class:`~.config.OptionError`); nothing is written then.
    """
    network = load_network(
        checkpoint,
        num_steps=num_steps,
        refine_steps=refine_steps,
        device=device,
        threads=threads,
        affine=affine,
        network_precision=network_precision,
        compile_shooting=compile_shooting,
    )
    return infer(
        network, source, target, out_dir=out, source_label=source_label, target_label=target_label
    )


def register_batch(
    source: Tensor,
    target: Tensor,
    cfg: dict[str, Any],
    *,
    source_label: Tensor | None = None,
    target_label: Tensor | None = None,
    voxel_size: Sequence[float] | None = None,
    progress: bool = False,
) -> RegistrationResult:
    """A batch of tensor pairs ``(B, 1, *S)`` on one grid (voxel size ``voxel_size`` mm): each
    image normalised as ``cfg["normalize"]`` says, one optimisation, metrics on the grid per
    item (lists) in ``extras["metrics"]``; no files."""
    from ..metrics import fold_statistics, jacobian_determinant
    from ..ops.grid import domain_spacing
    from ..ops.warp import warp_labels

    if cfg["region_mask"] or cfg["working_shape"] is not None:
        raise ValueError("region_mask and working_shape need one pair, not a batch of tensors")
    src, tgt = as_batch(source, "source"), as_batch(target, "target")
    if src.shape != tgt.shape:
        raise ValueError(f"source {tuple(src.shape)} and target {tuple(tgt.shape)} differ")
    mm = None if voxel_size is None else [float(v) for v in voxel_size]
    spacing = domain_spacing(tuple(src.shape[2:]), cfg["spacing_mode"], mm)
    norm = cfg["normalize"]
    src_n = torch.cat([normalize_intensities(s.float(), norm, "source")[0] for s in src])
    tgt_n = torch.cat([normalize_intensities(t.float(), norm, "target")[0] for t in tgt])
    result = register_working(
        src_n.unsqueeze(1), tgt_n.unsqueeze(1), spacing, cfg, progress=progress
    )
    with torch.no_grad():
        folds = fold_statistics(jacobian_determinant(result.phi_inv, spacing))
    metrics: dict[str, Any] = {k: v.tolist() for k, v in folds.items()}
    metrics.update(model=result.model, time_s=result.time_s, stopped=result.stopped)
    metrics["runtime"] = dict(result.extras["runtime"])
    if source_label is not None and target_label is not None:
        device = result.phi_inv.device
        s_lab = as_batch(source_label, "source_label").to(device).long()
        t_lab = as_batch(target_label, "target_label").to(device).long()
        items = dice_summary(warp_labels(s_lab, result.phi_inv, spacing), t_lab)
        metrics["dice"] = {
            "per_label": {k: [it["per_label"][k] for it in items] for k in items[0]["per_label"]},
            "mean": [it["mean"] for it in items],
        }
    result.extras.update(metrics=metrics, config=cfg)
    return result
