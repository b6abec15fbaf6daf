"""``rdmm data align``: affine pre-alignment of a volume pool to one template.

:func:`align_pool` registers every volume of a pool CSV (columns as the data modules read them:
image paths, optional label paths and subject ids, relative paths relative to the CSV's folder;
:func:`datamodules.pool.read_pool_csv`) affinely to a template with the orchestrator
(:func:`~.run.register`, model ``affine``, physical domain spacing and the default affine
options: the settings of ``benchmarks/ixi_opt.py``), and writes into ``OUT``:

* ``images/<name>.nii.gz``: the image resampled (linear) onto the template's grid;
* ``labels/<name>.nii.gz``: its label map (nearest neighbour, dtype kept), when the row has one;
* ``records/<name>.json``: the volume's record (template Dice before and after, time, the
  affine part ``T_aff`` as a world matrix: template RAS mm -> source RAS mm), written last, so
  a volume with a record is complete;
* ``subjects.csv``: the input's columns (image and label paths now relative to ``OUT``) plus
  ``template_dice`` (mean Dice of the warped labels against the template's, empty without
  labels) and ``source_path`` (the original image), one row per aligned volume, input order;
* ``align.json``: the pool, template, exclusions, resolved registration options and version;
* with ``pairs`` (a pairs CSV of pool volumes, e.g. the evaluation pairs): that CSV under its
  own name, on the aligned volumes. A data module on ``OUT`` then validates on aligned pairs,
  and its ``exclude_eval_volumes`` drops their volumes from training (the paths match).

Each file is written atomically (:func:`~.atomic.staged_file`). A run resumes a killed one: a
volume with a record is skipped; ``align.json`` must then name the same pool, template,
exclusions and options. ``exclude`` (a pairs CSV, :func:`datamodules.pool.read_pair_csv`) drops
every subject one of whose images the pairs name (matched by path as ``exclude_eval_volumes``
does). The pool, the template and every named file are checked before any work (one-line
``ValueError``); a volume that fails later is counted and reported, the rest go on.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..io import read_image, read_label_map, write_volume
from ..io.pairs import PAIR_COLUMNS, PairRow, read_pairs_csv
from .atomic import check_output_dir, output_lock, staged_file

__all__ = [
    "ALIGN_CSV",
    "ALIGN_JSON",
    "AlignSummary",
    "PoolEntry",
    "Template",
    "align_pool",
    "excluded_subjects",
    "read_align_pool",
    "resolve_template",
]

ALIGN_CSV = "subjects.csv"
"""The pool CSV written into the output folder."""
ALIGN_JSON = "align.json"
"""The run's record (options, template, version) in the output folder."""
EXTRA_COLUMNS = ("template_dice", "source_path")
"""Columns added to the input's in :data:`ALIGN_CSV`."""
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
RUNTIME_KEYS = ("device", "threads", "max_time")
"""Registration options that may change between a run and its resumption."""


@dataclass(frozen=True)
class PoolEntry:
    """One pool row: absolute ``image``/``label`` paths, its ``cells`` by column (as in the
    CSV) and ``name``, the output file name (the image's stem + ``.nii.gz``)."""

    subject: str
    image: str
    label: str | None
    cells: dict[str, str]
    name: str


@dataclass(frozen=True)
class Template:
    """The template image (and label map) every volume is aligned to; ``subject`` when it is a
    pool subject."""

    image: str
    label: str | None = None
    subject: str | None = None


@dataclass
class AlignSummary:
    """What :func:`align_pool` did: counts, the mean time of the volumes aligned now, the
    one-line failures and the written ``subjects.csv``."""

    aligned: int = 0
    skipped: int = 0
    failed: int = 0
    excluded: int = 0
    times_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    csv_path: Path | None = None
    pairs_path: Path | None = None

    @property
    def mean_time_s(self) -> float | None:
        return sum(self.times_s) / len(self.times_s) if self.times_s else None

    def line(self) -> str:
        mean = "-" if self.mean_time_s is None else f"{self.mean_time_s:.1f} s"
        return (
            f"{self.aligned} aligned, {self.skipped} skipped (done earlier), {self.failed} "
            f"failed, {self.excluded} excluded; mean time {mean} per aligned volume"
        )


# ---------------------------------------------------------------------------------------------
# reading the pool


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def _header(csv_path: str) -> list[str]:
    """The column names of a pool CSV (its rows are read by ``read_pool_csv``)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle):
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    raise ValueError(f"{csv_path}: empty CSV (no header)")


def _pick_column(header: list[str], given: str | None, defaults: tuple[str, ...], flag: str):
    if given is not None:
        if given not in header:
            raise ValueError(f"no column {given!r} ({flag}); columns: {', '.join(header)}")
        return given
    return next((c for c in defaults if c in header), None)


def read_align_pool(
    pool_csv: str | os.PathLike,
    path_column: str | None = None,
    label_column: str | None = None,
    subject_column: str = "subject",
) -> tuple[list[str], list[PoolEntry], dict[str, str]]:
    """Read a pool CSV: ``(header, entries, columns)``, ``columns`` naming the ``path``,
    ``label`` (may be absent) and ``subject`` columns. Defaults: path column ``path`` or
    ``image``, label column ``label`` when present. Every named file must exist.

    Raises:
        ValueError: one line naming the CSV and the column, row or file at fault.
    """
    from datamodules.pool import read_pool_csv

    name = os.path.abspath(os.path.expanduser(os.fspath(pool_csv)))
    if not os.path.isfile(name):
        raise ValueError(f"{name}: pool CSV not found")
    header = _header(name)
    try:
        path_col = _pick_column(header, path_column, ("path", "image"), "--path-column")
        if path_col is None:
            raise ValueError(f"no column 'path' or 'image' (--path-column); columns: {header}")
        label_col = _pick_column(header, label_column, ("label",), "--label-column")
        subject_col = _pick_column(header, subject_column, (), "--subject-column")
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    columns = {"path": path_col, "subject": subject_col}
    if label_col is not None:
        columns["label"] = label_col
    others = [c for c in header if c not in columns.values()]
    table = read_pool_csv(name, path_col, label_col, subject_col, others)
    entries = []
    for i in range(len(table)):
        image, label = table.path(i), table.label(i)
        for column, path in ((path_col, image), (label_col, label)):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}, row {i + 2}: {column} file not found: {path}")
        subject = table.subject_names[table.subjects[i]].decode("utf-8")
        cells = {c: table.group_value(c, i) for c in others}
        cells[subject_col] = subject
        entries.append(PoolEntry(subject, image, label, cells, _stem(image) + ".nii.gz"))
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise ValueError(
                f"{name}: {seen[entry.name]} and {entry.image} would both be written as "
                f"{entry.name}; give the images distinct file names"
            )
        seen[entry.name] = entry.image
    return header, entries, columns


def excluded_subjects(entries: list[PoolEntry], pairs_csv: str | os.PathLike) -> set[str]:
    """Subjects of ``entries`` one of whose images a pairs CSV names (matched by path)."""
    from datamodules.pool import read_pair_csv

    name = os.path.abspath(os.path.expanduser(os.fspath(pairs_csv)))
    paths = {p.decode("utf-8") for p in read_pair_csv(name, False).volumes.paths.tolist()}
    return {e.subject for e in entries if e.image in paths}


def resolve_template(
    template: str,
    entries: list[PoolEntry],
    template_label: str | None = None,
    data_dir: str | None = None,
) -> Template:
    """The template: a pool subject id (its first volume and label) or an image file (relative
    to ``data_dir`` when it exists there, else to the working directory); a file that is a pool
    volume takes that row's label and subject unless ``template_label`` is given."""
    by_subject = next((e for e in entries if e.subject == template), None)
    if by_subject is not None:
        if template_label is not None:
            raise ValueError("--template-label applies to a template file, not a pool subject")
        return Template(by_subject.image, by_subject.label, by_subject.subject)
    path = _resolve_file(template, data_dir)
    if path is None:
        raise ValueError(f"--template {template}: neither a subject of the pool nor a file")
    label = None if template_label is None else _resolve_file(template_label, data_dir)
    if template_label is not None and label is None:
        raise ValueError(f"--template-label {template_label}: file not found")
    row = next((e for e in entries if e.image == path), None)
    if row is not None and label is None:
        return Template(path, row.label, row.subject)
    return Template(path, label, None if row is None else row.subject)


def _resolve_file(path: str, data_dir: str | None) -> str | None:
    """An existing file: ``path`` itself or, relative, under ``data_dir`` first."""
    raw = os.path.expanduser(path)
    candidates = [raw]
    if data_dir is not None and not os.path.isabs(raw):
        candidates.insert(0, os.path.join(data_dir, raw))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def _pool_pairs(pairs_csv: str, kept: list[PoolEntry]) -> list[PairRow]:
    """The rows of a pairs CSV whose volumes are all pool volumes (not excluded), with labels
    only where the pool has them (one-line ``ValueError`` otherwise)."""
    by_image = {e.image: e for e in kept}
    rows = read_pairs_csv(pairs_csv, image_types=False)
    for row in rows:
        for side in ("source", "target"):
            entry = by_image.get(getattr(row, side))
            if entry is None:
                raise ValueError(
                    f"{pairs_csv}, line {row.line}: {side} {getattr(row, side)} is not a "
                    "volume of the pool (or it is excluded); --pairs needs pool volumes"
                )
            if row.has_labels and entry.label is None:
                raise ValueError(
                    f"{pairs_csv}, line {row.line}: the pool has no label map of {entry.image}"
                )
    return rows


def _write_pairs(
    out: Path,
    pairs_csv: str,
    rows: list[PairRow],
    kept: list[PoolEntry],
    done: Mapping[str, dict[str, Any]],
    say: Callable[[str], None],
) -> Path:
    """``OUT/<name of pairs_csv>``: the pairs on the aligned volumes (paths relative to
    ``OUT``); a pair with a volume that failed is left out (reported)."""
    by_image = {e.image: done.get(e.name) for e in kept}
    labelled = any(row.has_labels for row in rows)
    columns = list(PAIR_COLUMNS if labelled else PAIR_COLUMNS[:2])
    path = out / os.path.basename(pairs_csv)
    with staged_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                source, target = by_image[row.source], by_image[row.target]
                if source is None or target is None:
                    say(f"{pairs_csv}, line {row.line}: left out (a volume failed to align)")
                    continue
                cells = [source["image"], target["image"]]
                if labelled:
                    cells += [source["label"] or "", target["label"] or ""]
                writer.writerow(cells)
    return path


# ---------------------------------------------------------------------------------------------
# one volume


def _done(out: Path, entry: PoolEntry) -> dict[str, Any] | None:
    """The record of a volume aligned by an earlier run (None: not done)."""
    record = out / "records" / (_stem(entry.name) + ".json")
    files = [out / "images" / entry.name]
    if entry.label is not None:
        files.append(out / "labels" / entry.name)
    if not record.is_file() or not all(f.is_file() for f in files):
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("source_path") == entry.image else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from .outputs import _jsonable

    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(dict(data)), indent=2, allow_nan=False) + "\n")


def _align_one(
    out: Path, entry: PoolEntry, template: Any, template_label: Any, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Register ``entry`` to the template and write its image, label and record."""
    from .run import register

    start = time.perf_counter()
    result = register(
        entry.image, template, cfg, source_label=entry.label, target_label=template_label
    )
    outputs, metrics = result.extras["outputs"], result.extras["metrics"]
    with staged_file(out / "images" / entry.name) as tmp:
        write_volume(tmp, outputs.warped.data, outputs.warped.affine, "float32")
    if outputs.warped_label is not None:
        lab = outputs.warped_label
        with staged_file(out / "labels" / entry.name) as tmp:
            write_volume(tmp, lab.data, lab.affine, lab.file_dtype)
    dice = metrics.get("dice") or {}
    initial = metrics.get("dice_initial") or {}
    record = {
        "subject": entry.subject,
        "source_path": entry.image,
        "source_label": entry.label,
        "image": f"images/{entry.name}",
        "label": None if entry.label is None else f"labels/{entry.name}",
        "template_dice": dice.get("mean"),
        "initial_dice": initial.get("mean"),
        "affine_world_ras": outputs.affine_matrix,
        "registration_time_s": metrics["time_s"],
        "stopped": metrics.get("stopped"),
        "time_s": time.perf_counter() - start,
    }
    _write_json(out / "records" / (_stem(entry.name) + ".json"), record)
    return record


def _line(k: int, n: int, entry: PoolEntry, record: dict[str, Any], note: str = "") -> str:
    dice, initial = record.get("template_dice"), record.get("initial_dice")
    text = f"[{k}/{n}] {entry.subject} {entry.name}: "
    if dice is None:
        text += "template Dice -"
    else:
        text += f"template Dice {dice:.4f}"
        text += "" if initial is None else f" (before {initial:.4f})"
    if note:
        return f"{text} {note}"
    text += f", {record['time_s']:.1f} s"
    return text + (f", stopped early: {record['stopped']}" if record.get("stopped") else "")


# ---------------------------------------------------------------------------------------------


def _identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``align.json`` a resumed run must share."""
    cfg = {k: v for k, v in record["register"].items() if k not in RUNTIME_KEYS}
    return {k: record[k] for k in ("pool", "template", "exclude", "columns")} | {"register": cfg}


def _check_resume(out: Path, record: dict[str, Any]) -> None:
    if not out.exists():
        return
    previous = out / ALIGN_JSON
    if not previous.is_file():
        if any(out.iterdir()):
            raise ValueError(f"{out}: folder is not empty and holds no {ALIGN_JSON}")
        return
    from .outputs import _jsonable

    try:
        old = json.loads(previous.read_text())
        same = _identity(old) == _identity(json.loads(json.dumps(_jsonable(record))))
    except (OSError, ValueError, KeyError):
        same = False
    if not same:
        raise ValueError(
            f"{out}: aligned earlier with another pool, template, --exclude or options "
            f"(see {previous}); choose a new --out"
        )


def align_pool(
    pool_csv: str | os.PathLike,
    template: str,
    out_dir: str | os.PathLike,
    *,
    template_label: str | None = None,
    data_dir: str | os.PathLike | None = None,
    exclude: str | os.PathLike | None = None,
    pairs: str | os.PathLike | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    subject_column: str = "subject",
    threads: int | None = None,
    max_time: float | None = None,
    device: str | None = None,
    report: Callable[[str], None] | None = None,
    on_volume: Callable[[int, int], None] | None = None,
) -> AlignSummary:
    """Align every volume of ``pool_csv`` affinely to ``template`` into ``out_dir`` (see the
    module docstring). ``pool_csv``, ``exclude`` and a relative template file are looked up
    under ``data_dir`` when given. ``max_time`` bounds each volume's registration (s).
    ``report(line)`` gets one line per volume (default: stderr), ``on_volume(done, total)``
    is called after each.

    Raises:
        ValueError: one line naming the file, column or option at fault, before any work.
    """
    from .config import resolve_register_config

    base = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
    if base is not None and not os.path.isdir(base):
        raise ValueError(f"--data-dir {data_dir}: folder not found")
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    pool_path = _resolve_file(os.fspath(pool_csv), base) or os.fspath(pool_csv)
    header, entries, columns = read_align_pool(pool_path, path_column, label_column, subject_column)
    pool_path = os.path.abspath(pool_path)
    chosen = resolve_template(template, entries, template_label, base)
    exclude_path = None
    dropped: set[str] = set()
    if exclude is not None:
        exclude_path = _resolve_file(os.fspath(exclude), base)
        if exclude_path is None:
            raise ValueError(f"--exclude {exclude}: file not found")
        dropped = excluded_subjects(entries, exclude_path)
        if chosen.subject in dropped:
            raise ValueError(f"--template {template}: subject {chosen.subject} is in --exclude")
    kept = [e for e in entries if e.subject not in dropped]
    pair_rows, pairs_path = [], None
    if pairs is not None:
        pairs_path = _resolve_file(os.fspath(pairs), base)
        if pairs_path is None:
            raise ValueError(f"--pairs {pairs}: file not found")
        if os.path.basename(pairs_path) in (ALIGN_CSV, ALIGN_JSON):
            raise ValueError(f"--pairs {pairs}: rename it (its name is an output of the run)")
        pair_rows = _pool_pairs(pairs_path, kept)
    explicit = {"model": "affine", "spacing_mode": "physical", "threads": threads}
    explicit.update(max_time=max_time, device=device)
    cfg = resolve_register_config(None, (), explicit)
    tmpl = read_image(chosen.image)
    tmpl_label = None if chosen.label is None else read_label_map(chosen.label, reference=tmpl)
    out = check_output_dir(out_dir)
    record = {
        "pool": pool_path,
        "template": {"image": chosen.image, "label": chosen.label, "subject": chosen.subject},
        "template_grid": {
            "shape": list(tmpl.shape),
            "spacing_mm": list(tmpl.voxel_size_mm),
            "affine_ras": np.asarray(tmpl.affine).tolist(),
        },
        "exclude": exclude_path,
        "pairs": pairs_path,
        "columns": columns,
        "register": cfg,
        "version": __version__,
    }
    _check_resume(out, record)
    summary = AlignSummary(excluded=len(entries) - len(kept))
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / ALIGN_JSON, record)
        done = _align_all(out, kept, tmpl, tmpl_label, cfg, summary, say, on_volume)
        summary.csv_path = _write_pool(out, header, columns, kept, done)
        if pairs_path is not None:
            summary.pairs_path = _write_pairs(out, pairs_path, pair_rows, kept, done, say)
        _write_json(out / ALIGN_JSON, record | {"summary": _summary_record(summary)})
    return summary


def _align_all(
    out: Path,
    kept: list[PoolEntry],
    tmpl: Any,
    tmpl_label: Any,
    cfg: dict[str, Any],
    summary: AlignSummary,
    say: Callable[[str], None],
    on_volume: Callable[[int, int], None] | None,
) -> dict[str, dict[str, Any]]:
    """Align (or skip, when done earlier) every volume; returns the records by output name and
    counts them in ``summary``."""
    done: dict[str, dict[str, Any]] = {}
    for k, entry in enumerate(kept, start=1):
        previous = _done(out, entry)
        if previous is not None:
            done[entry.name] = previous
            summary.skipped += 1
            say(_line(k, len(kept), entry, previous, "(done earlier, skipped)"))
        else:
            try:
                done[entry.name] = _align_one(out, entry, tmpl, tmpl_label, cfg)
            except (ValueError, RuntimeError, OSError) as exc:
                message = " ".join(str(exc).split())
                summary.failed += 1
                summary.failures.append(f"{entry.image}: {message}")
                say(f"[{k}/{len(kept)}] {entry.subject} {entry.name}: FAILED: {message}")
            else:
                summary.aligned += 1
                summary.times_s.append(done[entry.name]["time_s"])
                say(_line(k, len(kept), entry, done[entry.name]))
        if on_volume is not None:
            on_volume(k, len(kept))
    return done


def _summary_record(summary: AlignSummary) -> dict[str, Any]:
    return {
        "aligned": summary.aligned,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "excluded": summary.excluded,
        "mean_time_s": summary.mean_time_s,
        "failures": summary.failures,
    }


def _write_pool(
    out: Path,
    header: list[str],
    columns: Mapping[str, str],
    entries: list[PoolEntry],
    done: Mapping[str, dict[str, Any]],
) -> Path:
    """``subjects.csv``: the aligned volumes, input columns and order, paths relative to
    ``out``, plus :data:`EXTRA_COLUMNS`."""
    names = header + [c for c in EXTRA_COLUMNS if c not in header]
    path = out / ALIGN_CSV
    with staged_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            for entry in entries:
                record = done.get(entry.name)
                if record is None:
                    continue
                row = dict(entry.cells)
                row[columns["path"]] = record["image"]
                if "label" in columns:
                    row[columns["label"]] = record["label"] or ""
                dice = record.get("template_dice")
                row["template_dice"] = "" if dice is None or not math.isfinite(dice) else dice
                row["source_path"] = entry.image
                writer.writerow(row)
    return path
