"""The model card of a shipped model: what it is, how it was trained, how well it registers.

A card is a YAML file ``<name>.yaml`` beside the model file ``<name>.ckpt``. A maintainer writes
the human part (:data:`HUMAN_KEYS`); ``rdmm models pack`` adds the part read from the checkpoint
(:data:`PACKED_KEYS`: model, training grid, the preprocessing record of the training data module,
file size and sha256), so grid and preprocessing are never copied by hand.

Human part (an example of the form; the values are made up)::

    summary: T1 brain MRI, RDMM-net after the affine net     # one line
    training_data: <data set>, <N> subjects, random cross-subject pairs
    licence: <licence of the weights>; data: <data licence and attribution>
    preprocessing_summary: RAS+, 2 mm, 96x112x96, 0.5-99.5 percentile rescale   # optional
    training_command: python train.py experiment=<experiment> ...
    training_budget: <epochs>, <hours>
    hardware: <GPU or CPU>
    evaluation:
      metric: mean Dice over <K> labels
      value: 0.7          # or null
      pairs: <pairs CSV or data set of the evaluated pairs>
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import Model, SpacingMode, either, values

__all__ = [
    "HUMAN_KEYS",
    "PACKED_KEYS",
    "Evaluation",
    "ModelCard",
    "card_from_mapping",
    "card_to_mapping",
    "card_to_yaml",
    "check_model_name",
    "read_card_file",
]

HUMAN_KEYS = (
    "summary",
    "training_data",
    "licence",
    "preprocessing_summary",
    "training_command",
    "training_budget",
    "hardware",
    "evaluation",
)
"""Card entries a maintainer writes (``preprocessing_summary`` may be left out)."""
PACKED_KEYS = ("model", "image_shape", "spacing_mode", "preprocessing", "size_bytes", "sha256")
"""Card entries ``rdmm models pack`` fills from the checkpoint file."""
_OPTIONAL = ("preprocessing_summary",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Evaluation:
    """How the model was evaluated: ``metric`` (e.g. ``"mean Dice, 3 labels"``), its ``value``
    (None: not evaluated yet) and ``pairs`` (the pair list or data set)."""

    metric: str
    value: float | None
    pairs: str


@dataclass(frozen=True)
class ModelCard:
    """One shipped model (see the module docstring for the YAML form).

    Attributes:
        name: the name ``rdmm infer --checkpoint NAME`` takes (the file stem).
        model: ``"affine"``, ``"svf"``, ``"lddmm"`` or ``"rdmm"`` (from the checkpoint).
        summary: one line.
        training_data: the data set(s) the network was trained on.
        licence: licence of the weights and attribution of the training data.
        training_command: the command that reproduces the checkpoint.
        training_budget: epochs / steps / time.
        hardware: where it was trained.
        evaluation: metric, value and pair list.
        image_shape: the training grid (from the checkpoint).
        spacing_mode: ``"parity"`` or ``"physical"`` (from the checkpoint).
        preprocessing: the data module's preprocessing record (from the checkpoint; None for
            checkpoints without one).
        size_bytes, sha256: of the model file (checked before it is loaded).
        preprocessing_summary: a human summary of ``preprocessing`` (may be empty).
    """

    name: str
    model: str
    summary: str
    training_data: str
    licence: str
    training_command: str
    training_budget: str
    hardware: str
    evaluation: Evaluation
    image_shape: tuple[int, ...]
    spacing_mode: str
    preprocessing: dict[str, Any] | None
    size_bytes: int
    sha256: str
    preprocessing_summary: str = field(default="")


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name (letters, digits, ``. _ -``; no path), else a
    one-line ValueError."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    return name


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key, "" if key in _OPTIONAL else None)
    if not isinstance(value, str) or not (value.strip() or key in _OPTIONAL):
        raise ValueError(f"{where}: {key} must be a non-empty text; got {value!r}")
    return " ".join(value.split())


def _evaluation(value: Any, where: str) -> Evaluation:
    if not isinstance(value, Mapping) or set(value) != {"metric", "value", "pairs"}:
        raise ValueError(f"{where}: evaluation must have exactly metric, value and pairs")
    number = value["value"]
    if number is not None and (isinstance(number, bool) or not isinstance(number, int | float)):
        raise ValueError(f"{where}: evaluation.value must be a number or null; got {number!r}")
    return Evaluation(
        metric=_text(value, "metric", f"{where}: evaluation"),
        value=None if number is None else float(number),
        pairs=_text(value, "pairs", f"{where}: evaluation"),
    )


def _packed(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The entries ``rdmm models pack`` writes, checked."""
    missing = [k for k in PACKED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)} (write cards with `rdmm models pack`)")
    model, shape, mode = data["model"], data["image_shape"], data["spacing_mode"]
    if model not in values(Model):
        raise ValueError(f"{where}: model must be {either(Model)}; got {model!r}")
    if not (
        isinstance(shape, list) and len(shape) in (2, 3) and all(type(n) is int for n in shape)
    ):
        raise ValueError(f"{where}: image_shape must be 2 or 3 integers; got {shape!r}")
    if mode not in values(SpacingMode):
        raise ValueError(f"{where}: spacing_mode must be {either(SpacingMode)}; got {mode!r}")
    if not isinstance(data["preprocessing"], dict | type(None)):
        raise ValueError(f"{where}: preprocessing must be a mapping or null")
    size, digest = data["size_bytes"], data["sha256"]
    if type(size) is not int or size <= 0:
        raise ValueError(f"{where}: size_bytes must be a positive integer; got {size!r}")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ValueError(f"{where}: sha256 must be 64 hex digits; got {digest!r}")
    return {
        "model": model,
        "image_shape": tuple(shape),
        "spacing_mode": mode,
        "preprocessing": data["preprocessing"],
        "size_bytes": size,
        "sha256": digest,
    }


def card_from_mapping(data: Any, name: str, where: str) -> ModelCard:
    """A :class:`ModelCard` from a complete card mapping (human and packed entries).

    Args:
        data: the parsed YAML.
        name: the model name (the file stem).
        where: how errors name the card (its path).

    Raises:
        ValueError: one line naming ``where`` and the entry at fault (missing, unknown, wrong
            type).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a model card must be a mapping of entries")
    check_model_name(name)
    unknown = sorted(set(data) - {"name", *HUMAN_KEYS, *PACKED_KEYS})
    if unknown:
        raise ValueError(f"{where}: unknown card entries {unknown}; known: {list(HUMAN_KEYS)}")
    if data.get("name", name) != name:
        raise ValueError(f"{where}: name {data['name']!r} differs from the file name {name!r}")
    texts = {k: _text(data, k, where) for k in HUMAN_KEYS if k != "evaluation"}
    evaluation = _evaluation(data.get("evaluation"), where)
    return ModelCard(name=name, evaluation=evaluation, **texts, **_packed(data, where))


def card_to_mapping(card: ModelCard) -> dict[str, Any]:
    """The card as plain YAML-ready data (:func:`card_from_mapping` reads it back)."""
    evaluation = card.evaluation
    data: dict[str, Any] = {"name": card.name}
    for key in HUMAN_KEYS:
        data[key] = getattr(card, key)
    data["evaluation"] = {
        "metric": evaluation.metric,
        "value": evaluation.value,
        "pairs": evaluation.pairs,
    }
    data.update({k: getattr(card, k) for k in PACKED_KEYS})
    data["image_shape"] = list(card.image_shape)
    return data


def card_to_yaml(card: ModelCard) -> str:
    """The YAML text of a card file, with a header naming who wrote the packed entries."""
    import yaml

    header = (
        f"# Model card of {card.name}.ckpt. model, image_shape, spacing_mode, preprocessing,\n"
        "# size_bytes and sha256 were read from the checkpoint by `rdmm models pack`: do not\n"
        "# edit them (the file is checked against sha256 before it is loaded).\n"
    )
    return header + yaml.safe_dump(card_to_mapping(card), sort_keys=False, width=100)


def read_card_file(path: str | Path) -> Any:
    """The parsed YAML of a card file; one-line ValueError naming it when it cannot be read."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: card not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: unreadable model card ({first})") from None
