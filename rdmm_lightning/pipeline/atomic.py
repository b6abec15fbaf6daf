"""All-or-nothing outputs: stage files in a hidden sibling folder, move them into place at the end.

A failed command leaves no output folder (and no parent folders) behind; an existing output
folder is only touched once every new file has been written. :func:`output_lock` keeps two
commands from writing one output folder at the same time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "check_output_dir",
    "check_output_file",
    "lock_path",
    "output_lock",
    "staged_dir",
    "staged_file",
]


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


# ---------------------------------------------------------------------------------------------
# one writer per output folder


def lock_path(out_dir: str | os.PathLike) -> Path:
    """The lock file of an output folder: ``.<name>.<hash>.rdmm-lock`` in the folder's nearest
    existing ancestor (next to the staging folders; never inside the output folder, and no
    folder is created for it). The hash of the absolute path tells apart folders that share
    an ancestor."""
    out = Path(out_dir).absolute()
    digest = hashlib.sha1(os.fsencode(out)).hexdigest()[:10]
    return _nearest_existing(out) / f".{out.name}.{digest}.rdmm-lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _create(path: Path) -> bool:
    """Create ``path`` holding this process's id, atomically (``O_EXCL``); False if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    return True


def _take_stale(path: Path, pid: int | None) -> None:
    """Move aside a lock whose holder ``pid`` is dead. Only one of several processes can rename
    a given file; one that finds it moved away just tries to create the lock again. A moved
    file that turns out to be a new live lock (it changed after it was read) is put back."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read_pid(aside) != pid and not path.exists():
        os.rename(aside, path)
        return
    aside.unlink(missing_ok=True)


@contextmanager
def output_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``out_dir`` (:func:`lock_path`) for the duration of the block.

    The lock file is created atomically (``O_EXCL``) and holds this process's id; a second
    command for the same folder gets a one-line ``ValueError`` while the first one holds it.
    The lock of a process that no longer exists (killed) is taken over. Re-entrant within one
    process (a nested block for the same folder is a no-op).

    Raises:
        ValueError: another live process holds the lock.
    """
    path = lock_path(out_dir)
    if path in _HELD:
        yield path
        return
    _acquire(path, out_dir)
    _HELD.add(path)
    try:
        yield path
    finally:
        _HELD.discard(path)
        if _read_pid(path) == os.getpid():
            path.unlink(missing_ok=True)


_HELD: set[Path] = set()
"""Lock files this process holds."""


def _acquire(path: Path, out_dir: str | os.PathLike, attempts: int = 100) -> None:
    for _ in range(attempts):
        if _create(path):
            return
        pid = _read_pid(path)
        if pid is not None and _pid_alive(pid):
            raise ValueError(
                f"{out_dir}: another rdmm command (pid {pid}) is writing this folder "
                f"(lock file {path}); wait for it to finish or choose another output folder"
            )
        if pid is None and _age(path) < 2.0:
            time.sleep(0.02)  # created but its pid not written yet: read it again
            continue
        _take_stale(path, pid)
    raise ValueError(f"{out_dir}: cannot take the lock file {path}")


def _age(path: Path) -> float:
    """Seconds since ``path`` was last modified (infinite when it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")
