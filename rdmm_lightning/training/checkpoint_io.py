"""Atomic checkpoint writes: a killed or crashed run never leaves a truncated ``.ckpt``.

Lightning's :class:`~lightning_fabric.plugins.io.TorchCheckpointIO` writes local files through an
fsspec transaction whose temporary file lives in the system temp folder and is moved without an
fsync, so a crash can leave a partial or empty file behind. :class:`AtomicCheckpointIO` writes
to a temporary file in the checkpoint's own folder, flushes it to disk, renames it over the
target with :func:`os.replace` (atomic on POSIX and Windows within one file system) and fsyncs the
folder. Readers see either the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save"]

_TMP_MARK = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (directory entry); not possible on every platform."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale(target: Path, keep: Path) -> None:
    """Delete temporary files of ``target`` left by killed writers (one writer per run)."""
    for stale in target.parent.glob(f".{target.name}{_TMP_MARK}*"):
        if stale != keep:
            with contextlib.suppress(OSError):
                stale.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a same-folder temporary file, fsync and rename."""
    target = Path(os.fspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}{_TMP_MARK}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)
    _remove_stale(target, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` with atomic local writes (remote URLs keep the parent's way).

    Plug it in with ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)
