"""The registry of shipped models: the models folder, cards, and ``--checkpoint NAME_OR_PATH``
resolution (model files here are plain bytes: resolution checks size and sha256, not content;
tests/pretrained/test_pack.py packs and runs a real network)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
import yaml

from rdmm_lightning.cli.main import main
from rdmm_lightning.models import load_registration_checkpoint, read_checkpoint
from rdmm_lightning.pretrained import (
    MAX_MODEL_BYTES,
    MODELS_DIR_VAR,
    card_from_mapping,
    card_to_yaml,
    list_models,
    model_card,
    model_file,
    models_dir,
    read_card_file,
    resolve_checkpoint,
)

HUMAN = {
    "summary": "a test model",
    "training_data": "synthetic shapes",
    "licence": "Apache-2.0",
    "training_command": "python train.py",
    "training_budget": "2 steps",
    "hardware": "CPU",
    "evaluation": {"metric": "mean Dice", "value": 0.5, "pairs": "2 validation pairs"},
}


def _card(data: bytes, **changes) -> dict:
    packed = {
        "model": "rdmm",
        "image_shape": [32, 32],
        "spacing_mode": "parity",
        "preprocessing": None,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return {**HUMAN, **packed, **changes}


def _ship(folder: Path, name: str, data: bytes = b"weights", **changes) -> Path:
    """Write ``name.ckpt`` (``data``) and its card into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ckpt").write_bytes(data)
    card = card_from_mapping(_card(data, **changes), name, "test")
    (folder / f"{name}.yaml").write_text(card_to_yaml(card))
    return folder / f"{name}.ckpt"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_an_empty_or_missing_registry_ships_nothing(tmp_path, monkeypatch, capsys):
    assert list_models(tmp_path) == [] and list_models(tmp_path / "absent") == []
    monkeypatch.setenv(MODELS_DIR_VAR, str(tmp_path))
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip() == "no models shipped"
    _ship(tmp_path, "one")  # negative control: a shipped model is listed
    assert main(["models"]) == 0
    assert "one" in capsys.readouterr().out


def test_models_folder_argument_then_variable_then_package(tmp_path, monkeypatch):
    monkeypatch.delenv(MODELS_DIR_VAR, raising=False)
    packaged = models_dir()
    assert packaged.parts[-3:] == ("rdmm_lightning", "pretrained", "models")
    monkeypatch.setenv(MODELS_DIR_VAR, str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "arg") == tmp_path / "arg"


def test_cards_round_trip_through_yaml(tmp_path):
    _ship(tmp_path, "b-model")
    _ship(tmp_path, "a-model", b"other weights", model="svf")
    cards = list_models(tmp_path)
    assert [c.name for c in cards] == ["a-model", "b-model"]
    card = model_card("a-model", tmp_path)
    assert card.model == "svf" and card.image_shape == (32, 32)
    assert card.evaluation.value == 0.5 and card.size_bytes == len(b"other weights")
    again = card_from_mapping(read_card_file(tmp_path / "a-model.yaml"), "a-model", "x")
    assert again == card


def test_resolution_an_existing_file_wins_then_a_checked_name(tmp_path, monkeypatch):
    shipped = _ship(tmp_path / "reg", "net")
    assert resolve_checkpoint("net", tmp_path / "reg") == shipped
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net").write_bytes(b"a local file")
    assert resolve_checkpoint("net", tmp_path / "reg") == Path("net")  # the path wins
    (tmp_path / "net").unlink()
    (tmp_path / "net").mkdir()  # a folder is not a checkpoint file: the name resolves
    assert resolve_checkpoint("net", tmp_path / "reg") == shipped
    with pytest.raises(ValueError) as info:
        resolve_checkpoint("other", tmp_path / "reg")
    message = str(info.value)
    assert "no checkpoint file or shipped model named 'other'; shipped: net" in message
    assert "(rdmm models)" in message and "\n" not in message
    with pytest.raises(ValueError, match="shipped: none"):
        resolve_checkpoint("other", tmp_path / "empty")


def test_a_changed_or_missing_model_file_fails_with_one_line(tmp_path):
    path = _ship(tmp_path, "net", b"0123456789")
    path.write_bytes(b"0123456780")  # same size, other content
    with pytest.raises(ValueError, match="does not match the sha256 of its card") as info:
        resolve_checkpoint("net", tmp_path)
    assert "\n" not in str(info.value)
    path.write_bytes(b"012345")
    with pytest.raises(ValueError, match="has 6 bytes, its card says 10"):
        model_file(model_card("net", tmp_path), tmp_path)
    path.unlink()
    with pytest.raises(ValueError, match="net.ckpt is missing; reinstall"):
        resolve_checkpoint("net", tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"summary": ""}, "summary must be a non-empty text"),
        ({"licence": None}, "licence must be a non-empty text"),
        ({"evaluation": {"metric": "Dice", "value": 0.5}}, "exactly metric, value and pairs"),
        ({"evaluation": {**HUMAN["evaluation"], "value": "high"}}, "must be a number or null"),
        ({"sha256": "abc"}, "sha256 must be 64 hex digits"),
        ({"model": "bspline"}, "model must be 'affine', 'svf', 'lddmm' or 'rdmm'"),
        ({"image_shape": [32]}, "image_shape must be 2 or 3 integers"),
        ({"spacing_mode": "mm"}, "spacing_mode must be"),
        ({"colour": "red"}, "unknown card entries ['colour']"),
        ({"name": "other"}, "name 'other' differs from the file name 'net'"),
    ],
)
def test_bad_cards_are_named_in_one_line(tmp_path, capsys, monkeypatch, changes, message):
    (tmp_path / "net.yaml").write_text(card_to_yaml(card_from_mapping(_card(b"w"), "net", "")))
    assert list_models(tmp_path)  # the control: the valid card reads
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(_card(b"w", **changes)))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        list_models(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "net.yaml")) and "\n" not in str(info.value)
    monkeypatch.setenv(MODELS_DIR_VAR, str(tmp_path))
    assert main(["models"]) == 2
    assert message.split("'")[0] in _error(capsys)


def test_unreadable_card_and_bad_names(tmp_path):
    (tmp_path / "net.yaml").write_text("summary: [unclosed\n")
    with pytest.raises(ValueError, match="net.yaml: unreadable model card"):
        list_models(tmp_path)
    with pytest.raises(ValueError, match="invalid model name"):
        card_from_mapping(_card(b"w"), "../x", "card")


def test_shipped_models_match_their_cards(monkeypatch):
    """Every model in the package: file within the size limit and equal to its card (sha256),
    loads with weights_only=True, and its card's grid, model and preprocessing are the
    checkpoint's (the packer wrote them; nobody edited either file)."""
    monkeypatch.delenv(MODELS_DIR_VAR, raising=False)
    for card in list_models():
        path = model_file(card)
        assert card.size_bytes <= MAX_MODEL_BYTES, card.name
        module = load_registration_checkpoint(path)  # weights_only=True
        assert (card.model, card.image_shape) == (module.model_name, tuple(module.image_shape))
        assert card.spacing_mode == module.spacing_mode
        record = module.preprocessing
        assert card.preprocessing == (None if record is None else record.to_dict()), card.name
        kept = set(read_checkpoint(path))
        assert not kept & {"optimizer_states", "lr_schedulers", "loops", "callbacks"}, card.name
        assert isinstance(torch.load(path, weights_only=True), dict)
