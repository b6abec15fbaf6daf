"""Shipped pretrained models: their cards and the resolution of ``--checkpoint NAME``.

:mod:`.registry` finds the models folder and resolves names; :mod:`.card` reads and writes
the model cards. ``rdmm models`` lists them, ``rdmm models pack`` (maintainers) adds one
(:mod:`rdmm_lightning.models.pack`).
"""

from .card import Evaluation, ModelCard, card_from_mapping, card_to_yaml, read_card_file
from .registry import (
    MAX_MODEL_BYTES,
    MODELS_DIR_VAR,
    file_sha256,
    list_models,
    model_card,
    model_file,
    models_dir,
    resolve_checkpoint,
)

__all__ = [
    "MAX_MODEL_BYTES",
    "MODELS_DIR_VAR",
    "Evaluation",
    "ModelCard",
    "card_from_mapping",
    "card_to_yaml",
    "file_sha256",
    "list_models",
    "model_card",
    "model_file",
    "models_dir",
    "read_card_file",
    "resolve_checkpoint",
]
