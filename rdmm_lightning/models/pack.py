"""Packing a training checkpoint as a shipped model (``rdmm models pack``, maintainers).

:func:`pack_checkpoint` keeps what inference needs (:data:`KEPT_KEYS`: the weights, the
hyper-parameters, the model metadata, the training config for provenance) and the data module's
preprocessing record, and drops the optimizer, learning-rate scheduler, loop and callback states.
It checks that the packed file loads with ``weights_only=True`` into the same weights and record,
refuses files over the size limit, and completes the maintainer's card with the entries read
from the checkpoint (:data:`rdmm_lightning.pretrained.card.PACKED_KEYS`). Writing both files is
the caller's job (all or nothing).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..pretrained.card import HUMAN_KEYS, ModelCard, card_from_mapping, check_model_name
from ..pretrained.registry import MAX_MODEL_BYTES
from .base import CHECKPOINT_KEY
from .checkpoint import (
    DATAMODULE_HPARAMS_KEY,
    TRAINING_CONFIG_KEY,
    load_registration_checkpoint,
    read_checkpoint,
)

__all__ = ["KEPT_KEYS", "pack_checkpoint", "slim_checkpoint"]

KEPT_KEYS = (
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    CHECKPOINT_KEY,
    TRAINING_CONFIG_KEY,
    "pytorch-lightning_version",
    "epoch",
    "global_step",
)
"""Checkpoint entries a packed model keeps (those present); the preprocessing record is added."""


def slim_checkpoint(ckpt: Mapping[str, Any], preprocessing: Mapping[str, Any] | None) -> dict:
    """The entries of ``ckpt`` in :data:`KEPT_KEYS` plus the preprocessing record (a plain
    dict, :meth:`~rdmm_lightning.io.preprocessing.PreprocessingConfig.to_dict`) as the data
    module's only hyper-parameter."""
    slim = {key: ckpt[key] for key in KEPT_KEYS if key in ckpt}
    if preprocessing is not None:
        slim[DATAMODULE_HPARAMS_KEY] = {"preprocessing": dict(preprocessing)}
    return slim


def _same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def pack_checkpoint(
    checkpoint: str | os.PathLike,
    card: Mapping[str, Any],
    name: str,
    *,
    card_path: str = "card",
    max_bytes: int = MAX_MODEL_BYTES,
) -> tuple[bytes, ModelCard]:
    """The packed model file (bytes) and its complete card.

    Args:
        checkpoint: a training checkpoint of an affine/svf/lddmm/rdmm network.
        card: the human entries of the card (:data:`~rdmm_lightning.pretrained.card.HUMAN_KEYS`;
            a ``model`` entry must match the checkpoint's).
        name: the model name.
        card_path: how errors name the card.
        max_bytes: the size limit of the packed file.

    Raises:
        ValueError: one line: an unusable checkpoint, an incomplete card, a model that differs
            from the card's, or a packed file over ``max_bytes``.
    """
    check_model_name(name)
    if not isinstance(card, Mapping):
        raise ValueError(f"{card_path}: a model card must be a mapping of entries")
    where = os.fspath(checkpoint)
    original = load_registration_checkpoint(checkpoint)  # every check of `rdmm infer`
    record = None if original.preprocessing is None else original.preprocessing.to_dict()
    if card.get("model", original.model_name) != original.model_name:
        raise ValueError(
            f"{card_path}: model {card['model']!r}, but {where} holds a "
            f"{original.model_name!r} model"
        )
    buffer = io.BytesIO()
    torch.save(slim_checkpoint(read_checkpoint(checkpoint), record), buffer)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise ValueError(
            f"{where}: the packed model has {len(data):,} bytes, over the limit of "
            f"{max_bytes:,} bytes for a shipped model"
        )
    with tempfile.TemporaryDirectory() as tmp:
        packed_path = Path(tmp) / f"{name}.ckpt"
        packed_path.write_bytes(data)
        packed = load_registration_checkpoint(packed_path)  # weights_only=True
    if not _same_weights(original.state_dict(), packed.state_dict()) or (
        packed.preprocessing != original.preprocessing
    ):
        raise ValueError(f"{where}: the packed model does not reload to the same network")
    human = {k: card[k] for k in (*HUMAN_KEYS, "name") if k in card}
    complete = {
        **human,
        "model": original.model_name,
        "image_shape": [int(n) for n in original.image_shape],
        "spacing_mode": str(original.spacing_mode),
        "preprocessing": record,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    extra = sorted(set(card) - set(complete))
    if extra:
        raise ValueError(f"{card_path}: unknown card entries {extra}; known: {list(HUMAN_KEYS)}")
    return data, card_from_mapping(complete, name, card_path)
