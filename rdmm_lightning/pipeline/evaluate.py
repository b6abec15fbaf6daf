"""``rdmm evaluate`` as a function: register every pair of a CSV file and summarise the metrics.

:func:`evaluate_pairs` reads ``PAIRS.csv`` (:func:`rdmm_lightning.io.pairs.read_pairs_csv`,
columns ``source,target[,source_label,target_label]``, relative paths relative to the CSV's
folder) and registers each pair through the orchestrator :mod:`.run`, either with a trained
network checkpoint (:func:`~.run.infer`, as ``rdmm infer``; the checkpoint is loaded once) or
with a pairwise optimiser (:func:`~.run.register`, options as for ``rdmm register``, resolved
once). Each pair's output files (docs/architecture.md) go into ``OUT/pair_XXX/`` (``XXX`` =
the pair's 1-based index), then ``OUT/results.csv`` (one row per pair, :data:`RESULT_COLUMNS`) and
``OUT/summary.json`` (mean and std over the pairs, the model and the resolved options) are
written.

Every option, the CSV and every file it names are checked before the first registration, so a
bad input leaves no output folder behind. A registration that fails later with a user error
stops the run with a ``ValueError`` naming the pair; the finished pairs' folders are kept, and
``resume=True`` (``rdmm evaluate --resume``) continues such a run, or one that was killed: a
pair whose folder holds the ``metrics.json`` of the same pair and options is not registered
again, its row is read back from it (pair folders are written all or nothing, so one with a
``metrics.json`` is complete). The output folder is locked while the command runs
(:func:`~.atomic.output_lock`). Pairs whose deformable stage ran 0 iterations (their outputs
are the affine registration) are listed in ``summary.json``'s ``"incomplete"``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..io.pairs import PAIR_COLUMNS, PairRow, read_pairs_csv
from .atomic import check_output_dir, output_lock, staged_file
from .config import OptionError

__all__ = [
    "PAIR_COLUMNS",
    "RESULT_COLUMNS",
    "SUMMARY_METRICS",
    "Evaluation",
    "PairRow",
    "evaluate_pairs",
    "format_summary_table",
    "mean_std",
    "pair_folder_name",
    "read_pairs_csv",
]

SUMMARY_METRICS = (
    "dice_mean",
    "dice_initial_mean",
    "negative_jacobian_voxels",
    "negative_jacobian_fraction",
    "folds",
    "time_s",
)
"""The per-pair metrics that ``summary.json`` averages."""

RESULT_COLUMNS = ("index", "source", "target") + SUMMARY_METRICS
"""Columns of ``results.csv``."""


@dataclass
class Evaluation:
    """What :func:`evaluate_pairs` wrote: the rows of ``results.csv`` and ``summary.json``;
    ``resumed`` the indices of the pairs read back from an earlier run."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    resumed: list[int] = field(default_factory=list)


def pair_folder_name(index: int, count: int) -> str:
    """``pair_001``-style folder name of pair ``index`` of ``count`` (at least 3 digits)."""
    return f"pair_{index:0{max(3, len(str(count)))}d}"


# ---------------------------------------------------------------------------------------------
# one pair: network checkpoint or pairwise optimiser

Registrar = Callable[[PairRow, str], dict[str, Any]]
"""``(pair, out_dir) -> metrics`` of one registration (writes ``out_dir``)."""


def _checkpoint_registrar(
    checkpoint: str | os.PathLike,
    num_steps: int | None,
    refine_steps: int,
    device: str | None,
    threads: int | None = None,
    affine: str | None = None,
    network_precision: str | None = None,
    compile_shooting: bool = False,
) -> tuple[Registrar, str, dict[str, Any]]:
    """Load the checkpoint once (options checked); returns the per-pair function
    (:func:`~.run.infer`), the model name and the options recorded in ``summary.json``."""
    from .network import load_network
    from .run import infer

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
    trained = network.module.num_steps if num_steps is None else num_steps

    def run(row: PairRow, out_dir: str) -> dict[str, Any]:
        labels = {"source_label": row.source_label, "target_label": row.target_label}
        result = infer(network, row.source, row.target, out_dir=out_dir, **labels)
        return result.extras["metrics"]

    return run, network.model_name, network.config(trained)


def _optimiser_registrar(
    model: str,
    device: str | None,
    max_time: float | None,
    config: str | os.PathLike | Mapping[str, Any] | None,
    overrides: Sequence[str],
    threads: int | None = None,
) -> tuple[Registrar, str, dict[str, Any]]:
    """Resolve the options once (errors before any work); returns the per-pair function
    (:func:`~.run.register`), the model name and the resolved options."""
    from .config import resolve_register_config
    from .run import register

    explicit = {"model": model, "max_time": max_time, "device": device, "threads": threads}
    cfg = resolve_register_config(config, overrides, explicit)  # checks device and threads

    def run(row: PairRow, out_dir: str) -> dict[str, Any]:
        labels = {"source_label": row.source_label, "target_label": row.target_label}
        result = register(
            row.source, row.target, cfg, out_dir=out_dir, region_mask=cfg["region_mask"], **labels
        )
        return result.extras["metrics"]

    return run, cfg["model"], cfg


PAIRWISE_ONLY = ("max_time", "config", "overrides")
CHECKPOINT_ONLY = ("num_steps", "refine_steps", "affine", "network_precision", "compile_shooting")


def check_evaluate_options(checkpoint: Any, model: Any, given: Mapping[str, Any]) -> None:
    """Raise :class:`~.config.OptionError` unless exactly one of ``checkpoint`` and ``model``
    is given, with only the options of its kind (``given``: option name -> value, None when not
    given; :data:`PAIRWISE_ONLY`, :data:`CHECKPOINT_ONLY`)."""
    if (checkpoint is None) == (model is None):
        got = "both" if checkpoint is not None else "neither"
        raise OptionError(
            ["checkpoint", "model"],
            lambda n: f"give exactly one of {n[0]} (a trained network) and {n[1]} (got {got})",
        )
    own, other = (
        ("checkpoint", "pairwise model") if model is None else ("pairwise model", "checkpoint")
    )
    wrong = [
        k for k in (PAIRWISE_ONLY if model is None else CHECKPOINT_ONLY) if given.get(k) is not None
    ]
    if wrong:
        raise OptionError(wrong, lambda n: f"{', '.join(n)} apply to a {other}, not a {own}")


# ---------------------------------------------------------------------------------------------
# results and summary


def _dice_mean(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if not value else value.get("mean")


def _result_row(row: PairRow, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": row.index,
        "source": row.source,
        "target": row.target,
        "dice_mean": _dice_mean(metrics, "dice"),
        "dice_initial_mean": _dice_mean(metrics, "dice_initial"),
        "negative_jacobian_voxels": int(metrics["negative_jacobian_voxels"]),
        "negative_jacobian_fraction": float(metrics["negative_jacobian_fraction"]),
        "folds": float(metrics["folds"]),
        "time_s": float(metrics["time_s"]),
    }


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and population std (ddof 0) of the values that are not None; (None, None) if none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    mean = math.fsum(present) / len(present)
    var = math.fsum((v - mean) ** 2 for v in present) / len(present)
    return mean, math.sqrt(var)


def _summary(
    rows: Sequence[dict[str, Any]],
    pairs: Sequence[PairRow],
    stopped: Sequence[int],
    incomplete: Sequence[int],
    *,
    model: str,
    checkpoint: str | None,
    pairs_csv: str,
    out_dir: str,
    config: Mapping[str, Any],
    wall_time_s: float,
) -> dict[str, Any]:
    from .outputs import _jsonable

    means: dict[str, float | None] = {}
    stds: dict[str, float | None] = {}
    for key in SUMMARY_METRICS:
        means[key], stds[key] = mean_std(r[key] for r in rows)
    summary = {
        "pairs": len(rows),
        "pairs_with_labels": sum(p.has_labels for p in pairs),
        "model": model,
        "checkpoint": checkpoint,
        "pairs_csv": pairs_csv,
        "out": out_dir,
        "mean": means,
        "std": stds,
        "std_ddof": 0,
        "stopped_early": list(stopped),
        "incomplete": list(incomplete),
        "wall_time_s": wall_time_s,
        "config": dict(config),
        "version": __version__,
    }
    return _jsonable(summary)


def _write_results(out: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    with staged_file(out / "results.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(RESULT_COLUMNS))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if row[k] is None else row[k] for k in RESULT_COLUMNS})
    with staged_file(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A markdown table of the mean (and std) of each metric in ``summary``."""
    lines = [
        f"{summary['model']}: {summary['pairs']} pairs "
        f"({summary['pairs_with_labels']} with labels)",
        "",
        "| metric | mean | std |",
        "|---|---:|---:|",
    ]
    for key in SUMMARY_METRICS:
        lines.append(f"| {key} | {_fmt(summary['mean'][key])} | {_fmt(summary['std'][key])} |")
    return "\n".join(lines)


def _progress_line(row: PairRow, count: int, metrics: Mapping[str, Any]) -> str:
    dice = _dice_mean(metrics, "dice")
    initial = _dice_mean(metrics, "dice_initial")
    text = f"pair {row.index}/{count}: "
    if dice is None:
        text += "Dice -"
    else:
        text += f"Dice {dice:.4f}" + ("" if initial is None else f" (initial {initial:.4f})")
    text += f", det J <= 0 at {metrics['negative_jacobian_voxels']} voxels"
    text += f", {float(metrics['time_s']):.2f} s"
    if metrics.get("stopped"):
        text += f", stopped early: {metrics['stopped']}"
    return text


# ---------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """The rows so far and the indices of the pairs that stopped early, were incomplete (0
    deformable iterations) or were read back from an earlier run."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    incomplete: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)

    def add(self, row: PairRow, metrics: Mapping[str, Any]) -> None:
        self.rows.append(_result_row(row, metrics))
        if metrics.get("stopped"):
            self.stopped.append(row.index)
        if not metrics.get("complete", True):
            self.incomplete.append(row.index)


def _register_all(
    pairs: Sequence[PairRow],
    run: Registrar,
    out: Path,
    names: tuple[str, str],
    progress: bool,
    resume: Mapping[str, Any] | None = None,
) -> _Progress:
    """Register every pair into ``out/pair_XXX``; returns the ``results.csv`` rows and the
    pairs' indices by outcome. A user error names the pair (``names``: the CSV and the output
    folder as the caller gave them). With ``resume`` (the run's config), a pair done by an
    earlier run with that config is read back instead (:func:`_done_metrics`)."""
    from .run import IncompleteRegistration

    csv_name, out_dir = names
    done = _Progress()
    count = len(pairs)
    for row in pairs:
        folder = out / pair_folder_name(row.index, count)
        metrics = None if resume is None else _done_metrics(row, folder, resume)
        if metrics is not None:
            done.add(row, metrics)
            done.resumed.append(row.index)
            if progress:
                line = _progress_line(row, count, metrics)
                print(f"{line} (done earlier, kept)", file=sys.stderr, flush=True)
            continue
        try:
            with warnings.catch_warnings():  # counted in summary.json's "incomplete" instead
                warnings.simplefilter("ignore", IncompleteRegistration)
                metrics = run(row, os.fspath(folder))
        except ValueError as exc:
            message = " ".join(str(exc).split())
            kept = f"; pairs 1-{row.index - 1} are in {out_dir}" if row.index > 1 else ""
            raise ValueError(
                f"pair {row.index}/{count} ({csv_name}, line {row.line}: {row.source} -> "
                f"{row.target}) failed: {message}{kept}"
            ) from exc
        done.add(row, metrics)
        if progress:
            print(_progress_line(row, count, metrics), file=sys.stderr, flush=True)
    return done


RUNTIME_KEYS = ("device", "threads")
"""Options that may differ between a run and its resumption (they do not change results)."""


def _comparable(config: Any) -> Any:
    from .outputs import _jsonable

    plain = _jsonable(config or {})
    return {k: v for k, v in plain.items() if k not in RUNTIME_KEYS}


def _same_file(a: Any, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return os.path.realpath(os.fspath(a)) == os.path.realpath(b)


def _done_metrics(row: PairRow, folder: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metrics of pair ``row`` from ``folder/metrics.json`` when an earlier run finished it
    with ``config`` (runtime keys aside), None when it has to run (no or unreadable file).

    Raises:
        ValueError: the folder holds another pair, or one registered with other options.
    """
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or "negative_jacobian_voxels" not in metrics:
        return None
    files = [
        (metrics.get("source", {}).get("path"), row.source),
        (metrics.get("target", {}).get("path"), row.target),
        (metrics.get("source_label"), row.source_label),
        (metrics.get("target_label"), row.target_label),
    ]
    if not all(_same_file(a, b) for a, b in files):
        raise ValueError(
            f"{folder} holds another pair than {row.source} -> {row.target}; "
            "resume with the same pairs file or choose another output folder"
        )
    before, now = _comparable(metrics.get("config")), _comparable(config)
    if before != now:
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise ValueError(
            f"{folder} was registered with other options (differing: {', '.join(keys)}); "
            "resume with the same options or choose another output folder"
        )
    return metrics


def evaluate_pairs(
    pairs_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: str | None = None,
    num_steps: int | None = None,
    refine_steps: int | None = None,
    device: str | None = None,
    max_time: float | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
    threads: int | None = None,
    resume: bool = False,
    affine: str | None = None,
    network_precision: str | None = None,
    compile_shooting: bool | None = None,
) -> Evaluation:
    """Register every pair of ``pairs_csv`` and write ``out_dir`` (see the module docstring).

    Args:
        pairs_csv: ``source,target[,source_label,target_label]`` CSV file.
        out_dir: output folder: ``pair_XXX/``, ``results.csv``, ``summary.json``.
        checkpoint: a trained network checkpoint (as ``rdmm infer``), or
        model: a pairwise optimiser ``"affine"``, ``"svf"``, ``"lddmm"`` or ``"rdmm"`` (as
            ``rdmm register``); exactly one of the two.
        num_steps, refine_steps: network iterations (default: as trained) and instance
            optimisation steps (default 0) (checkpoint only).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (default auto, or the
            config's for ``model``).
        max_time: wall-clock limit per pair in seconds (``model`` only).
        config, overrides: YAML file or mapping of options and ``"key=value"`` strings
            (``model`` only; see :mod:`.config`).
        progress: one line per pair on stderr.
        threads: intra-op threads per registration (default: ``RDMM_NUM_THREADS`` or chosen
            per pair by :func:`rdmm_lightning.runtime.choose_num_threads`).
        resume: keep the pairs an earlier run into ``out_dir`` finished with the same options
            (see the module docstring); the results are those of an uninterrupted run.
        affine: the affine stage before a deformable network, ``"net"``, ``"opt"`` or
            ``"none"`` (checkpoint only; as ``rdmm infer --affine``).
        network_precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (checkpoint only; as
            ``rdmm infer --network-precision``).
        compile_shooting: shoot with the right-hand side through ``torch.compile``
            (checkpoint only; as ``rdmm infer --compile-shooting``; the first pair compiles;
            for ``model``, set ``solver.compile`` in the config instead).

    Returns:
        :class:`Evaluation` with the ``results.csv`` rows and the ``summary.json`` dict.

    Raises:
        ValueError: one line naming the file or option at fault. Raised before any output is
            written for bad options and inputs; a registration that fails later names the pair
            (the finished pairs' folders are kept, no summary is written).
    """
    overrides = list(overrides)
    given = {"max_time": max_time, "config": config, "overrides": overrides or None}
    given.update(num_steps=num_steps, refine_steps=refine_steps, affine=affine)
    given.update(network_precision=network_precision, compile_shooting=compile_shooting)
    check_evaluate_options(checkpoint, model, given)
    csv_name = os.fspath(pairs_csv)
    out = check_output_dir(out_dir)
    pairs = read_pairs_csv(csv_name)
    if checkpoint is not None:
        run, model_name, cfg = _checkpoint_registrar(
            checkpoint, num_steps, refine_steps or 0, device, threads, affine,
            network_precision, bool(compile_shooting),
        )  # fmt: skip
    else:
        run, model_name, cfg = _optimiser_registrar(
            model, device, max_time, config, overrides, threads
        )

    start = time.perf_counter()
    names = (csv_name, os.fspath(out_dir))
    with output_lock(out):
        done = _register_all(pairs, run, out, names, progress, cfg if resume else None)
        summary = _summary(
            done.rows,
            pairs,
            done.stopped,
            done.incomplete,
            model=model_name,
            checkpoint=None if checkpoint is None else os.fspath(checkpoint),
            pairs_csv=csv_name,
            out_dir=os.fspath(out_dir),
            config=cfg,
            wall_time_s=time.perf_counter() - start,
        )
        _write_results(out, done.rows, summary)
    return Evaluation(rows=done.rows, summary=summary, resumed=done.resumed)
