"""The one reader of pair lists (``PAIRS.csv``): ``rdmm evaluate`` and the data modules use it.

Columns ``source,target[,source_label,target_label]`` (labels optional, both or neither; other
columns are ignored unless asked for as ``extra_columns``), one pair per non-empty line; the
header is the first non-empty line. Cells are stripped; relative paths are relative to the CSV's
folder (``~`` expanded). Every error is one line naming the CSV, the line and the column.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .volume import _check_file

__all__ = ["PAIR_COLUMNS", "PairRow", "read_pairs_csv"]

PAIR_COLUMNS = ("source", "target", "source_label", "target_label")
"""Columns of ``PAIRS.csv`` (the label columns are optional; other columns are ignored)."""


@dataclass(frozen=True)
class PairRow:
    """One row of ``PAIRS.csv`` with its paths resolved against the CSV's folder.

    Attributes:
        index: 1-based pair number.
        line: line of the CSV file the row was read from (the header is line 1 when no blank
            line precedes it).
        source, target: image paths.
        source_label, target_label: label map paths (both or neither), or None.
        extra: the cells of the requested ``extra_columns`` (stripped).
    """

    index: int
    line: int
    source: str
    target: str
    source_label: str | None = None
    target_label: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        """Whether the row names label maps (Dice is computed then)."""
        return self.source_label is not None


def _resolve(cell: str, folder: str) -> str:
    path = os.path.expanduser(cell)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(folder, path))


def _check_path(path: str, where: str, column: str, image_type: bool) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"{where}, {column} file not found: {path}")
    if image_type:
        try:
            _check_file(path)
        except ValueError as exc:
            raise ValueError(f"{where}, {column}: {exc}") from None
    if not os.access(path, os.R_OK):
        raise ValueError(f"{where}, {column}: {path}: not readable")


def _records(name: str) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` of the non-empty lines."""
    if not os.path.exists(name):
        raise ValueError(f"{name}: pairs file not found")
    if not os.path.isfile(name):
        raise ValueError(f"{name}: pairs file is not a file")
    try:
        with open(name, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            records = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"{name}: cannot read the pairs file ({first})") from None
    return [(line, row) for line, row in records if any(cell.strip() for cell in row)]


def _positions(
    name: str, header_line: int, header: list[str], extra_columns: Sequence[str]
) -> dict[str, int]:
    columns = [cell.strip() for cell in header]
    missing = [c for c in ("source", "target") if c not in columns]
    labels = [c for c in ("source_label", "target_label") if c in columns]
    if len(labels) == 1:
        missing.append(({"source_label", "target_label"} - set(labels)).pop())
    missing += [c for c in extra_columns if c not in columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {', '.join(missing)} in the header (line "
            f"{header_line}: {','.join(columns)}); need {','.join(PAIR_COLUMNS)}, labels optional"
        )
    return {c: columns.index(c) for c in (*PAIR_COLUMNS, *extra_columns) if c in columns}


def read_pairs_csv(
    path: str | os.PathLike,
    check_files: bool = True,
    *,
    image_types: bool = True,
    extra_columns: Sequence[str] = (),
    allow_empty: bool = False,
) -> list[PairRow]:
    """Read and check ``PAIRS.csv``; returns one :class:`PairRow` per non-empty row.

    Args:
        path: the CSV file.
        check_files: every named file must exist and be readable.
        image_types: with ``check_files``, also require a known image type (NIfTI, NRRD, MHA;
            :mod:`rdmm_lightning.io.volume`); the data modules, which read more formats
            through TorchIO, check existence only.
        extra_columns: further columns that must exist; their cells go to ``PairRow.extra``.
        allow_empty: a header without rows gives an empty list instead of an error.

    Raises:
        ValueError: one line naming the CSV (and line, column and file) at fault: a missing or
            unreadable CSV, a missing ``source``/``target`` column (or only one label column,
            or a missing extra column), an empty image cell, a row with only one label map, no
            rows, or (``check_files``) a file that is missing, unreadable or of an unknown type.
    """
    name = os.fspath(path)
    records = _records(name)
    if not records:
        raise ValueError(f"{name}: empty pairs file (need a header {','.join(PAIR_COLUMNS)})")
    header_line, header = records[0]
    position = _positions(name, header_line, header, extra_columns)
    folder = os.path.dirname(name)
    pairs: list[PairRow] = []
    for line, row in records[1:]:
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in position.items()}
        where = f"{name}, line {line}"
        for column in ("source", "target"):
            if not cells[column]:
                raise ValueError(f"{where}: empty {column} cell")
        for side, other in (("source", "target"), ("target", "source")):
            if cells.get(f"{other}_label") and not cells.get(f"{side}_label"):
                raise ValueError(
                    f"{where}: missing {side}_label for {_resolve(cells[side], folder)} "
                    "(give both source_label and target_label, or neither)"
                )
        paths = {c: _resolve(cells[c], folder) if cells.get(c) else None for c in PAIR_COLUMNS}
        if check_files:
            for column in PAIR_COLUMNS:
                if paths[column]:
                    _check_path(paths[column], where, column, image_types)
        pairs.append(
            PairRow(
                index=len(pairs) + 1,
                line=line,
                source=paths["source"],
                target=paths["target"],
                source_label=paths["source_label"],
                target_label=paths["target_label"],
                extra={c: cells[c] for c in extra_columns},
            )
        )
    if not pairs and not allow_empty:
        raise ValueError(f"{name}: no pairs (only the header)")
    return pairs
