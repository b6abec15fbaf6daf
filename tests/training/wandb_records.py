"""Reading the history records of an offline wandb run (the ``run-*.wandb`` file).

The file starts with a 7-byte header (``:W&B``, magic, version), then LevelDB-log records in
32 KiB blocks: 4-byte CRC, 2-byte length, 1-byte type (1 full, 2 first, 3 middle, 4 last), data.
Each complete record is a ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _payloads(data: bytes):
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _records(path: Path, kind: str) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    found = []
    for payload in _payloads(data):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == kind:
            found.append(getattr(record, kind))
    return found


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def history(path: Path) -> list[dict]:
    """The rows logged to the run (``{key: value}``), in order."""
    return [_items(h.item) for h in _records(path, "history")]


def config(path: Path) -> dict:
    """The run's config (later updates win)."""
    merged: dict = {}
    for c in _records(path, "config"):
        merged.update(_items(c.update))
    return merged
