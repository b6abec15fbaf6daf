"""``rdmm evaluate`` as a function: register every pair of a CSV file and summarise the metrics.

:func:`evaluate_pairs` reads ``PAIRS.csv`` (:func:`read_pairs_csv`, columns
``source,target[,source_label,target_label]``, relative paths relative to the CSV's folder) and
registers each pair either with a trained network checkpoint (the steps of ``rdmm infer``:
:func:`rdmm_lightning.models.load_registration_checkpoint` -> :func:`~.pair.prepare_pair` on the
checkpoint's grid -> ``module.predict``) or with a pairwise optimiser
(:func:`~.register.register_files`, options as for ``rdmm register``). Each pair's files of
architecture.md go into ``OUT/pair_XXX/`` (``XXX`` = the pair's 1-based index), then
``OUT/results.csv`` (one row per pair, :data:`RESULT_COLUMNS`) and ``OUT/summary.json`` (mean
and std over the pairs, the model and the resolved options) are written.

Every option, the CSV and every file it names are checked before the first registration, so a
bad input leaves no output folder behind. A registration that fails later with a user error
stops the run with a ``ValueError`` naming the pair; the finished pairs' folders are kept.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .atomic import check_output_dir, staged_file

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_METRICS",
    "Evaluation",
    "PairRow",
    "evaluate_pairs",
    "format_summary_table",
    "pair_folder_name",
    "read_pairs_csv",
]

PAIR_COLUMNS = ("source", "target", "source_label", "target_label")
"""Columns of ``PAIRS.csv`` (the label columns are optional; other columns are ignored)."""

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


@dataclass(frozen=True)
class PairRow:
    """One row of ``PAIRS.csv`` with its paths resolved against the CSV's folder.

    Attributes:
        index: 1-based pair number (the output folder is :func:`pair_folder_name` of it).
        line: line of the CSV file the row was read from (the header is line 1).
        source, target: image paths.
        source_label, target_label: label map paths (both or neither), or None.
    """

    index: int
    line: int
    source: str
    target: str
    source_label: str | None = None
    target_label: str | None = None

    @property
    def has_labels(self) -> bool:
        """Whether the row names label maps (Dice is computed then)."""
        return self.source_label is not None


@dataclass
class Evaluation:
    """What :func:`evaluate_pairs` wrote: the rows of ``results.csv`` and ``summary.json``."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def pair_folder_name(index: int, count: int) -> str:
    """``pair_001``-style folder name of pair ``index`` of ``count`` (at least 3 digits)."""
    return f"pair_{index:0{max(3, len(str(count)))}d}"


# ---------------------------------------------------------------------------------------------
# reading and checking PAIRS.csv


def _resolve(cell: str, folder: str) -> str:
    path = os.path.expanduser(cell)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(folder, path))


def _check_image_file(path: str, where: str) -> None:
    from ..io.volume import _check_file

    try:
        _check_file(path)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not os.access(path, os.R_OK):
        raise ValueError(f"{where}: {path}: not readable")


def read_pairs_csv(path: str | os.PathLike, check_files: bool = True) -> list[PairRow]:
    """Read and check ``PAIRS.csv``; returns one :class:`PairRow` per non-empty row.

    Raises:
        ValueError: one line naming the CSV (and line and file) at fault: a missing or
            unreadable CSV, a missing ``source``/``target`` column (or only one label column),
            an empty cell, a row with only one label map, no rows, or (``check_files``) a file
            that does not exist or is not a readable image file.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ValueError(f"{name}: pairs file not found")
    if not os.path.isfile(name):
        raise ValueError(f"{name}: pairs file is not a file")
    folder = os.path.dirname(name)
    try:
        with open(name, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            records = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"{name}: cannot read the pairs file ({first})") from None
    records = [(line, row) for line, row in records if any(cell.strip() for cell in row)]
    if not records:
        raise ValueError(f"{name}: empty pairs file (need a header {','.join(PAIR_COLUMNS)})")
    header_line, header = records[0]
    columns = [cell.strip() for cell in header]
    missing = [c for c in ("source", "target") if c not in columns]
    labels = [c for c in ("source_label", "target_label") if c in columns]
    if len(labels) == 1:
        missing.append(({"source_label", "target_label"} - set(labels)).pop())
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {', '.join(missing)} in the header (line "
            f"{header_line}: {','.join(columns)}); need {','.join(PAIR_COLUMNS)}, labels optional"
        )
    position = {c: columns.index(c) for c in PAIR_COLUMNS if c in columns}
    pairs: list[PairRow] = []
    for line, row in records[1:]:
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in position.items()}
        where = f"{name}, line {line}"
        for column in ("source", "target"):
            if not cells[column]:
                raise ValueError(f"{where}: empty {column} cell")
        if bool(cells.get("source_label")) != bool(cells.get("target_label")):
            raise ValueError(f"{where}: give both source_label and target_label, or neither")
        paths = {c: _resolve(v, folder) if v else None for c, v in cells.items()}
        if check_files:
            for column in PAIR_COLUMNS:
                if paths.get(column):
                    _check_image_file(paths[column], f"{where}, {column}")
        pairs.append(
            PairRow(
                index=len(pairs) + 1,
                line=line,
                source=paths["source"],
                target=paths["target"],
                source_label=paths.get("source_label"),
                target_label=paths.get("target_label"),
            )
        )
    if not pairs:
        raise ValueError(f"{name}: no pairs (only the header)")
    return pairs


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
) -> tuple[Registrar, str, dict[str, Any]]:
    """Load the checkpoint once; returns the per-pair function (the steps of ``rdmm infer``),
    the model name and the options recorded in ``summary.json``."""
    from ..models import load_registration_checkpoint
    from ..runtime import requested_threads, resolve_device
    from .network import register_with_network
    from .outputs import write_registration_outputs

    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0; got {refine_steps}")
    dev = resolve_device(device)
    requested_threads(threads)  # a bad count or RDMM_NUM_THREADS fails before any work
    module = load_registration_checkpoint(checkpoint)  # CheckpointError is a ValueError
    if module.model_name == "affine" and refine_steps:
        raise ValueError(
            f"{os.fspath(checkpoint)}: refine steps apply to svf/lddmm/rdmm checkpoints, not affine"
        )
    module = module.to(dev)
    config = {
        "checkpoint": os.fspath(checkpoint),
        "num_steps": module.num_steps if num_steps is None else num_steps,
        "refine_steps": refine_steps,
        "device": str(dev),
        "threads": threads,
        "hparams": dict(module.hparams),
    }

    def run(row: PairRow, out_dir: str) -> dict[str, Any]:
        pair, result = register_with_network(
            module,
            row.source,
            row.target,
            source_label=row.source_label,
            target_label=row.target_label,
            num_steps=num_steps,
            refine_steps=refine_steps,
            name=os.fspath(checkpoint),
            threads=threads,
        )
        pair_config = dict(config, num_steps=result.extras.get("num_steps"))
        return write_registration_outputs(out_dir, pair, result, config=pair_config)

    return run, module.model_name, config


def _optimiser_registrar(
    model: str,
    device: str | None,
    max_time: float | None,
    config: str | os.PathLike | Mapping[str, Any] | None,
    overrides: Sequence[str],
    threads: int | None = None,
) -> tuple[Registrar, str, dict[str, Any]]:
    """Resolve the options once (errors before any work); returns the per-pair function
    (:func:`~.register.register_files`), the model name and the resolved options."""
    from .config import resolve_register_config
    from .register import register_files

    explicit = {"model": model, "max_time": max_time, "device": device, "threads": threads}
    cfg = resolve_register_config(config, overrides, explicit)  # checks device and threads

    def run(row: PairRow, out_dir: str) -> dict[str, Any]:
        return register_files(
            row.source,
            row.target,
            out_dir,
            model=model,
            source_label=row.source_label,
            target_label=row.target_label,
            max_time=max_time,
            device=device,
            threads=threads,
            config=config,
            overrides=overrides,
            progress=False,
        )

    return run, cfg["model"], cfg


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


def _mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
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
        means[key], stds[key] = _mean_std(r[key] for r in rows)
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


def evaluate_pairs(
    pairs_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: str | None = None,
    num_steps: int | None = None,
    refine_steps: int = 0,
    device: str | None = None,
    max_time: float | None = None,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
    threads: int | None = None,
) -> Evaluation:
    """Register every pair of ``pairs_csv`` and write ``out_dir`` (see the module docstring).

    Args:
        pairs_csv: ``source,target[,source_label,target_label]`` CSV file.
        out_dir: output folder: ``pair_XXX/``, ``results.csv``, ``summary.json``.
        checkpoint: a trained network checkpoint (as ``rdmm infer``), or
        model: a pairwise optimiser ``"affine"``, ``"svf"``, ``"lddmm"`` or ``"rdmm"`` (as
            ``rdmm register``); exactly one of the two.
        num_steps, refine_steps: network iterations (default: as trained) and instance
            optimisation steps (checkpoint only).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (default auto, or the
            config's for ``model``).
        max_time: wall-clock limit per pair in seconds (``model`` only).
        config, overrides: YAML file or mapping of options and ``"key=value"`` strings
            (``model`` only; see :mod:`.config`).
        progress: one line per pair on stderr.
        threads: intra-op threads per registration (default: ``RDMM_NUM_THREADS`` or chosen
            per pair by :func:`rdmm_lightning.runtime.choose_num_threads`).

    Returns:
        :class:`Evaluation` with the ``results.csv`` rows and the ``summary.json`` dict.

    Raises:
        ValueError: one line naming the file or option at fault. Raised before any output is
            written for bad options and inputs; a registration that fails later names the pair
            (the finished pairs' folders are kept, no summary is written).
    """
    overrides = list(overrides)
    if (checkpoint is None) == (model is None):
        raise ValueError("give exactly one of checkpoint (a trained network) and model")
    if checkpoint is not None:
        extra = {"max_time": max_time, "config": config}
        given = [k for k, v in extra.items() if v is not None] + (
            ["overrides"] if overrides else []
        )
        if given:
            raise ValueError(f"{', '.join(given)} apply to a pairwise model, not a checkpoint")
    elif num_steps is not None or refine_steps:
        raise ValueError("num_steps and refine_steps apply to a checkpoint, not a pairwise model")
    csv_name = os.fspath(pairs_csv)
    out = check_output_dir(out_dir)
    pairs = read_pairs_csv(csv_name)
    if checkpoint is not None:
        run, model_name, cfg = _checkpoint_registrar(
            checkpoint, num_steps, refine_steps, device, threads
        )
    else:
        run, model_name, cfg = _optimiser_registrar(
            model, device, max_time, config, overrides, threads
        )

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    stopped: list[int] = []
    count = len(pairs)
    for row in pairs:
        folder = out / pair_folder_name(row.index, count)
        try:
            metrics = run(row, os.fspath(folder))
        except ValueError as exc:
            message = " ".join(str(exc).split())
            kept = f"; pairs 1-{row.index - 1} are in {out_dir}" if row.index > 1 else ""
            raise ValueError(
                f"pair {row.index}/{count} ({csv_name}, line {row.line}: {row.source} -> "
                f"{row.target}) failed: {message}{kept}"
            ) from exc
        rows.append(_result_row(row, metrics))
        if metrics.get("stopped"):
            stopped.append(row.index)
        if progress:
            print(_progress_line(row, count, metrics), file=sys.stderr, flush=True)
    summary = _summary(
        rows,
        pairs,
        stopped,
        model=model_name,
        checkpoint=None if checkpoint is None else os.fspath(checkpoint),
        pairs_csv=csv_name,
        out_dir=os.fspath(out_dir),
        config=cfg,
        wall_time_s=time.perf_counter() - start,
    )
    _write_results(out, rows, summary)
    return Evaluation(rows=rows, summary=summary)
