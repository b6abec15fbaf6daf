"""The shipped models: a folder of ``<name>.ckpt`` files with their cards ``<name>.yaml``.

The folder is ``rdmm_lightning/pretrained/models/`` of the installed package (package data: a
plain ``pip install .`` ships it, no network needed). The environment variable
:data:`MODELS_DIR_VAR` (``RDMM_MODELS_DIR``) names another folder, and every function takes a
``folder`` argument that wins over both (tests use either).

:func:`resolve_checkpoint` is how commands turn ``--checkpoint NAME_OR_PATH`` into a file: an
existing file wins; else a shipped model of that name, whose file is checked against the size
and sha256 of its card before it is used; else a one-line error listing the shipped names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .card import ModelCard, card_from_mapping, read_card_file

__all__ = [
    "MAX_MODEL_BYTES",
    "MODELS_DIR_VAR",
    "file_sha256",
    "list_models",
    "model_card",
    "model_file",
    "models_dir",
    "resolve_checkpoint",
]

MODELS_DIR_VAR = "RDMM_MODELS_DIR"
"""Environment variable naming the models folder instead of the packaged one."""
MAX_MODEL_BYTES = 10_000_000
"""Largest shipped model file (10 MB)."""

_PACKAGED = Path(__file__).resolve().parent / "models"


def models_dir(folder: str | os.PathLike | None = None) -> Path:
    """The models folder: ``folder``, else ``$RDMM_MODELS_DIR``, else the packaged one."""
    if folder is not None:
        return Path(os.fspath(folder)).expanduser()
    env = os.environ.get(MODELS_DIR_VAR, "").strip()
    return Path(env).expanduser() if env else _PACKAGED


def list_models(folder: str | os.PathLike | None = None) -> list[ModelCard]:
    """The cards of every shipped model, by name (empty when none is shipped).

    Raises:
        ValueError: one line naming a card that cannot be read or is incomplete.
    """
    root = models_dir(folder)
    if not root.is_dir():
        return []
    return [
        card_from_mapping(read_card_file(path), path.stem, str(path))
        for path in sorted(root.glob("*.yaml"))
    ]


def _names(cards: list[ModelCard]) -> str:
    return ", ".join(c.name for c in cards) or "none"


def model_card(name: str, folder: str | os.PathLike | None = None) -> ModelCard:
    """The card of the shipped model ``name``.

    Raises:
        ValueError: one line: no such model (the shipped names are listed).
    """
    cards = list_models(folder)
    for card in cards:
        if card.name == name:
            return card
    raise ValueError(f"no shipped model named {name!r}; shipped: {_names(cards)} (rdmm models)")


def model_file(card: ModelCard, folder: str | os.PathLike | None = None) -> Path:
    """The model file of ``card``, checked against its size and sha256.

    Raises:
        ValueError: one line: the file is missing or differs from the card.
    """
    path = models_dir(folder) / f"{card.name}.ckpt"
    if not path.is_file():
        raise ValueError(f"shipped model {card.name}: {path} is missing; reinstall rdmm-lightning")
    size = path.stat().st_size
    if size != card.size_bytes:
        differs = f"has {size:,} bytes, its card says {card.size_bytes:,}"
    elif file_sha256(path) != card.sha256:
        differs = "does not match the sha256 of its card"
    else:
        return path
    raise ValueError(
        f"shipped model {card.name}: {path} {differs} (corrupt or changed file); "
        "reinstall rdmm-lightning"
    )


def resolve_checkpoint(
    name_or_path: str | os.PathLike, folder: str | os.PathLike | None = None
) -> Path:
    """The checkpoint file ``--checkpoint`` names: an existing file, else the (checked) file of
    a shipped model of that name.

    Raises:
        ValueError: one line: neither a file nor a shipped name (the shipped names are
            listed), or a shipped file that differs from its card (:func:`model_file`).
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        return path
    cards = list_models(folder)
    for card in cards:
        if card.name == os.fspath(name_or_path):
            return model_file(card, folder)
    raise ValueError(
        f"checkpoint not found: no checkpoint file or shipped model named "
        f"{os.fspath(name_or_path)!r}; shipped: {_names(cards)} (rdmm models)"
    )


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
