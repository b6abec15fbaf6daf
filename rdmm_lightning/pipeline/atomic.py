"""All-or-nothing outputs: stage files in a hidden sibling folder, move them into place at the end.

A failed command leaves no output folder (and no parent folders) behind; an existing output
folder is only touched once every new file has been written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["check_output_dir", "check_output_file", "staged_dir", "staged_file"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _nearest_existing(path: Path) -> Path:
    """The closest ancestor of ``path`` that exists (``path`` itself excluded)."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Validate an output folder before any work: it must not be an existing file, and its
    nearest existing ancestor must be a writable folder. Returns it as an absolute Path."""
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder")
    anchor = out if out.is_dir() else _nearest_existing(out)
    if not anchor.is_dir():
        raise ValueError(f"{out_dir}: {anchor} is not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ValueError(f"{out_dir}: {anchor} is not writable")
    return out


def check_output_file(path: str | os.PathLike, suffixes: Iterable[str]) -> Path:
    """Validate an output file path (known suffix, not a folder, writable ancestor)."""
    out = Path(path).absolute()
    allowed = tuple(suffixes)
    if not out.name.lower().endswith(allowed):
        raise ValueError(f"{path}: unsupported output type (use {', '.join(allowed)})")
    if out.is_dir():
        raise ValueError(f"{path}: is a folder")
    check_output_dir(out.parent)
    return out


@contextmanager
def staged_dir(out_dir: str | os.PathLike, remove: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; on success its files replace those of ``out_dir``.

    If ``out_dir`` does not exist, the staging folder is renamed to it (parents are created
    then). If it exists, each staged file replaces the one of the same name, and the names in
    ``remove`` that were *not* staged are deleted (stale outputs of an earlier run); other files
    are left alone. On error the staging folder is deleted and ``out_dir`` is untouched.
    """
    out = check_output_dir(out_dir)
    anchor = out.parent if out.parent.exists() else _nearest_existing(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=anchor))
    try:
        yield tmp
        staged = {p.name for p in tmp.iterdir()}
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a new folder is not
            os.replace(tmp, out)
            return
        for name in sorted(staged):
            os.replace(tmp / name, out / name)
        for name in remove:
            if name not in staged and (out / name).is_file():
                (out / name).unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path with the same file name in a staging folder; on success it is
    moved to ``path`` (parents created then). On error nothing is left behind."""
    out = Path(path).absolute()
    anchor = out.parent if out.parent.exists() else _nearest_existing(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=anchor))
    try:
        yield tmp / out.name
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
