"""Light indexes of volume pools and fixed pair lists.

A :class:`VolumeTable` holds one row per volume as fixed-width numpy arrays (UTF-8 bytes for
paths, int32 codes for subjects and group columns). There is no Python object per entry, so a
22,950-entry index costs a few MB and DataLoader workers forked from the main process do not copy
it page by page through reference counting (the well-known growth of Python lists in workers).

Relative paths in a CSV are relative to the CSV's folder. Pair lists are read by the one
pair-list reader of the package (:func:`rdmm_lightning.io.pairs.read_pairs_csv`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rdmm_lightning.io.pairs import read_pairs_csv

__all__ = ["VolumeTable", "PairTable", "read_pool_csv", "read_pool_folder", "read_pair_csv"]


def _encode(values: Iterable[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=np.bytes_)


def _codes(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (int32) and the sorted vocabulary (bytes) of string values."""
    vocab, codes = np.unique(_encode(values), return_inverse=True)
    return codes.astype(np.int32).reshape(-1), vocab


@dataclass(frozen=True)
class VolumeTable:
    """Index of volumes: paths, optional label paths, subjects and group columns.

    Attributes:
        paths: ``(N,)`` bytes, absolute UTF-8 paths.
        labels: ``(N,)`` bytes label paths (``b""`` where missing) or None without a label column.
        subjects: ``(N,)`` int32 subject codes; ``subject_names[code]`` is the id.
        groups: column name -> ``(N,)`` int32 codes; ``group_values[name][code]`` is the value.
    """

    paths: np.ndarray
    labels: np.ndarray | None
    subjects: np.ndarray
    subject_names: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    group_values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, i: int) -> str:
        return self.paths[i].decode("utf-8")

    def label(self, i: int) -> str | None:
        if self.labels is None or not self.labels[i]:
            return None
        return self.labels[i].decode("utf-8")

    def group_value(self, column: str, i: int) -> str:
        return self.group_values[column][self.groups[column][i]].decode("utf-8")

    @property
    def num_subjects(self) -> int:
        return int(self.subject_names.shape[0])

    @property
    def has_all_labels(self) -> bool:
        return self.labels is not None and bool(np.all(self.labels != b""))

    def select(self, keep: np.ndarray) -> VolumeTable:
        """Rows where the boolean ``keep`` is true (codes are kept, vocabularies unchanged)."""
        return VolumeTable(
            self.paths[keep],
            None if self.labels is None else self.labels[keep],
            self.subjects[keep],
            self.subject_names,
            {k: v[keep] for k, v in self.groups.items()},
            dict(self.group_values),
        )


@dataclass(frozen=True)
class PairTable:
    """A fixed pair list: the distinct volumes and ``pairs`` ``(M, 2)`` int64 rows into them."""

    volumes: VolumeTable
    pairs: np.ndarray

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


def _resolve(base: Path, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value.strip())))


def _read_rows(csv_path: str | Path) -> tuple[Path, list[str], list[list[str]]]:
    path = Path(os.path.expanduser(str(csv_path)))
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        rows = [r for r in reader if any(c.strip() for c in r)]
    if not header:
        raise ValueError(f"{path}: empty CSV (no header)")
    return path, header, rows


def _column(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        raise ValueError(f"{path}: no column {name!r} (option {option!r}); columns: {header}")
    return header.index(name)


def _cell(rows: list[list[str]], col: int) -> list[str]:
    return [(r[col].strip() if col < len(r) else "") for r in rows]


def read_pool_csv(
    csv_path: str | Path,
    path_column: str = "path",
    label_column: str | None = None,
    subject_column: str | None = "subject",
    extra_columns: Sequence[str] = (),
) -> VolumeTable:
    """Read a pool CSV into a :class:`VolumeTable`.

    Args:
        csv_path: the CSV; relative paths inside are relative to its folder.
        path_column: column of image paths.
        label_column: column of label paths (cells may be empty), or None.
        subject_column: column of subject ids; None makes every row its own subject.
        extra_columns: columns kept as integer codes (group columns, knee side, visit, ...).
    """
    path, header, rows = _read_rows(csv_path)
    base = path.parent
    images = _cell(rows, _column(path, header, path_column, "path_column"))
    for k, v in enumerate(images):
        if not v:
            raise ValueError(f"{path}: row {k + 2} has an empty {path_column!r} cell")
    labels = None
    if label_column is not None:
        raw = _cell(rows, _column(path, header, label_column, "label_column"))
        labels = _encode(_resolve(base, v) if v else "" for v in raw)
    if subject_column is None:
        subjects = [str(k) for k in range(len(rows))]
    else:
        subjects = _cell(rows, _column(path, header, subject_column, "subject_column"))
        empty = [k + 2 for k, v in enumerate(subjects) if not v]
        if empty:
            raise ValueError(f"{path}: empty {subject_column!r} in row(s) {empty[:5]}")
    groups, values = {}, {}
    for name in dict.fromkeys(extra_columns):
        groups[name], values[name] = _codes(_cell(rows, _column(path, header, name, name)))
    subject_codes, subject_names = _codes(subjects)
    return VolumeTable(
        _encode(_resolve(base, v) for v in images),
        labels,
        subject_codes,
        subject_names,
        groups,
        values,
    )


def read_pool_folder(
    folder: str | Path, pattern: str = "*.nii.gz", subject_pattern: str | None = None
) -> VolumeTable:
    """Index the files matching ``pattern`` (``**`` recurses) in ``folder``, sorted by path.

    ``subject_pattern`` is a regular expression searched in each file's path relative to
    ``folder``; its first group (or the whole match) is the subject id. Without it every file is
    its own subject. There are no labels.
    """
    root = Path(os.path.expanduser(str(folder)))
    if not root.is_dir():
        raise ValueError(f"pool folder not found: {root}")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise ValueError(f"no files match {pattern!r} (option 'pool_pattern') in {root}")
    rel = [str(p.relative_to(root)) for p in files]
    if subject_pattern is None:
        subjects = rel
    else:
        regex = re.compile(subject_pattern)
        subjects = []
        for name in rel:
            match = regex.search(name)
            if match is None:
                raise ValueError(f"subject_pattern {subject_pattern!r} does not match {name!r}")
            subjects.append(match.group(1) if regex.groups else match.group(0))
    codes, names = _codes(subjects)
    return VolumeTable(_encode(os.path.normpath(str(p)) for p in files), None, codes, names)


def read_pair_csv(
    csv_path: str | Path, require_labels: bool = True, side_column: str | None = None
) -> PairTable:
    """Read a fixed pair list (``source,target[,source_label,target_label]``) with the pair-list
    reader of ``rdmm evaluate`` (:func:`rdmm_lightning.io.pairs.read_pairs_csv`).

    Args:
        csv_path: the CSV; relative paths inside are relative to its folder.
        require_labels: every pair must name both label files (ValueError naming the line
            otherwise).
        side_column: when set, columns ``source_<side_column>`` and ``target_<side_column>`` are
            read into the group column ``side_column`` (used to flip volumes to one side).

    Every named file must exist; ValueError names the line, column and file of the first
    missing one.
    """
    path = Path(os.path.expanduser(str(csv_path)))
    sides = () if side_column is None else tuple(f"{s}_{side_column}" for s in ("source", "target"))
    rows = read_pairs_csv(path, image_types=False, extra_columns=sides, allow_empty=True)
    labelled = any(row.has_labels for row in rows)
    if require_labels and rows:
        if not labelled:
            raise ValueError(
                f"{path}: labels are required but no row names source_label/target_label"
            )
        for row in rows:
            if not row.has_labels:
                raise ValueError(
                    f"{path}, line {row.line}: missing source_label for {row.source} "
                    "(labels are required)"
                )
    index: dict[str, int] = {}
    volumes: list[dict[str, str]] = []
    pairs = np.zeros((len(rows), 2), dtype=np.int64)
    for k, row in enumerate(rows):
        for s, side in enumerate(("source", "target")):
            vol = {"path": getattr(row, side), "label": getattr(row, f"{side}_label") or ""}
            if side_column is not None:
                vol["side"] = row.extra[f"{side}_{side_column}"]
            key = vol["path"]
            if key not in index:
                index[key] = len(volumes)
                volumes.append(vol)
            elif volumes[index[key]] != vol:
                raise ValueError(
                    f"{path}, line {row.line}: {key} appears with different label/side"
                )
            pairs[k, s] = index[key]
    return PairTable(_pair_volume_table(volumes, labelled, side_column), pairs)


def _pair_volume_table(
    volumes: list[dict[str, str]], has_labels: bool, side_column: str | None
) -> VolumeTable:
    codes = np.arange(len(volumes), dtype=np.int32)
    paths = _encode(v["path"] for v in volumes)
    labels = _encode(v["label"] for v in volumes) if has_labels else None
    groups, values = {}, {}
    if side_column is not None:
        groups[side_column], values[side_column] = _codes([v["side"] for v in volumes])
    return VolumeTable(paths, labels, codes, paths.copy(), groups, values)
