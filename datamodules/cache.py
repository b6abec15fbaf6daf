"""Optional on-disk cache of preprocessed volumes.

One ``.pt`` file per (image, label, flip, preprocessing) under ``root/<2 hex>/<40 hex>.pt``. The
key includes each source file's size and modification time, so edited files are re-read. Files
are written to a temporary name and renamed, so concurrent workers never read half a file; an
unreadable cache file is deleted and rebuilt. Augmentation is applied after the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

__all__ = ["VolumeCache"]

_FORMAT = 1


class VolumeCache:
    """Cache of preprocessed ``{"image", "label", "affine"}`` tensors keyed by source files."""

    def __init__(self, root: str | Path, signature: str) -> None:
        self.root = Path(os.path.expanduser(str(root)))
        self.root.mkdir(parents=True, exist_ok=True)
        self.signature = f"{_FORMAT}|{signature}"

    def _file(self, path: str, label: str | None, flip: bool) -> Path:
        parts = [self.signature, str(flip)]
        for p in (path, label):
            if p is None:
                parts.append("-")
                continue
            st = os.stat(p)
            parts.append(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}")
        digest = hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.pt"

    def get(self, path: str, label: str | None, flip: bool) -> dict[str, torch.Tensor] | None:
        file = self._file(path, label, flip)
        if not file.is_file():
            return None
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # a broken cache entry is rebuilt, never fatal
            file.unlink(missing_ok=True)
            return None

    def put(self, path: str, label: str | None, flip: bool, entry: dict[str, torch.Tensor]) -> None:
        file = self._file(path, label, flip)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        torch.save({k: _compact(k, v) for k, v in entry.items()}, tmp)
        os.replace(tmp, file)


def _compact(key: str, value: torch.Tensor) -> torch.Tensor:
    """Labels in the smallest signed integer type that holds them."""
    if key != "label" or value.numel() == 0:
        return value
    lo, hi = int(value.min()), int(value.max())
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return value.to(dtype)
    return value
