"""``rdmm models``: the shipped pretrained models and their cards.

* ``rdmm models``: a table of the shipped models (name, model, training grid, Dice, file size,
  summary), or ``no models shipped``;
* ``rdmm models show NAME``: the full card (training data, licence and attribution, grid and
  preprocessing, training command, budget and hardware, evaluation);
* ``rdmm models pack CKPT --name NAME --card CARD.yaml [--out DIR]`` (maintainers): write
  ``DIR/NAME.ckpt`` (the checkpoint without optimizer and loop states, at most 10 MB) and
  ``DIR/NAME.yaml`` (the card completed from the checkpoint: grid, preprocessing record, size,
  sha256), all or nothing; DIR defaults to the models folder.

The models folder is the package's ``rdmm_lightning/pretrained/models/`` or ``$RDMM_MODELS_DIR``
(:mod:`rdmm_lightning.pretrained.registry`); ``rdmm infer --checkpoint NAME`` uses a shipped model.
"""

from __future__ import annotations

import argparse

from rdmm_lightning.cli.main import CLIError, add_threads_option

__all__ = ["add_parser"]

DESCRIPTION = """\
List the pretrained models shipped with rdmm-lightning (use one with
'rdmm infer --checkpoint NAME SOURCE TARGET --out DIR'), show a model's card, or (maintainers)
pack a training checkpoint as a shipped model."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` parser with its ``show`` and ``pack`` sub-commands."""
    parser = subparsers.add_parser(
        "models",
        usage="%(prog)s [show NAME | pack CKPT --name NAME --card CARD.yaml [--out DIR]]",
        help="list the shipped pretrained models and their cards",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_threads_option(parser)
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="action", metavar="{show,pack}", prog=parser.prog)

    show = sub.add_parser("show", help="print the card of a shipped model")
    show.add_argument("name", metavar="NAME", help="model name (see rdmm models)")
    add_threads_option(show)
    show.set_defaults(func=_show)

    pack = sub.add_parser(
        "pack", help="(maintainers) pack a training checkpoint and its card as a shipped model"
    )
    pack.add_argument("checkpoint", metavar="CKPT", help="training checkpoint (.ckpt)")
    pack.add_argument("--name", required=True, help="model name (letters, digits, . _ -)")
    pack.add_argument("--card", required=True, metavar="CARD.yaml", help="the card's text part")
    pack.add_argument("--out", metavar="DIR", help="output folder (default: the models folder)")
    add_threads_option(pack)
    pack.set_defaults(func=_pack)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _dice(card) -> str:
    value = card.evaluation.value
    return "-" if value is None or "dice" not in card.evaluation.metric.lower() else f"{value:.3f}"


def _table(cards) -> str:
    rows = [("name", "model", "grid", "Dice", "size", "summary")]
    for c in cards:
        grid = "x".join(str(n) for n in c.image_shape)
        rows.append((c.name, c.model, grid, _dice(c), _size(c.size_bytes), c.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5] for r in rows
    )


def _card_text(card) -> str:
    ev = card.evaluation
    value = "not evaluated" if ev.value is None else f"{ev.value:.4f}"
    lines = [
        f"{card.name}: {card.summary}",
        f"model:              {card.model}",
        f"training data:      {card.training_data}",
        f"licence:            {card.licence}",
        f"grid:               {'x'.join(map(str, card.image_shape))} ({card.spacing_mode} "
        "domain spacing)",
    ]
    if card.preprocessing_summary:
        lines.append(f"preprocessing:      {card.preprocessing_summary}")
    record = card.preprocessing
    if record is None:
        lines.append("preprocessing record: none (the grid covers the target's field of view)")
    else:
        lines.append("preprocessing record (replayed by rdmm infer):")
        lines += [f"  {key}: {value}" for key, value in record.items()]
    lines += [
        f"training command:   {card.training_command}",
        f"training budget:    {card.training_budget}",
        f"hardware:           {card.hardware}",
        f"evaluation:         {ev.metric} {value} on {ev.pairs}",
        f"file:               {card.name}.ckpt, {card.size_bytes:,} bytes, sha256 {card.sha256}",
        f"use:                rdmm infer --checkpoint {card.name} SOURCE TARGET --out DIR",
    ]
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from rdmm_lightning.pretrained import list_models

    try:
        cards = list_models()
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    print(_table(cards) if cards else "no models shipped")
    return 0


def _show(args: argparse.Namespace) -> int:
    from rdmm_lightning.pretrained import model_card

    try:
        card = model_card(args.name)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    print(_card_text(card))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from rdmm_lightning.models.pack import pack_checkpoint
    from rdmm_lightning.pipeline.atomic import check_output_dir, staged_dir
    from rdmm_lightning.pretrained import card_to_yaml, models_dir, read_card_file

    out = models_dir(args.out)
    try:
        check_output_dir(out)
        card_data = read_card_file(args.card)
        data, card = pack_checkpoint(args.checkpoint, card_data, args.name, card_path=args.card)
        with staged_dir(out) as tmp:
            (tmp / f"{card.name}.ckpt").write_bytes(data)
            (tmp / f"{card.name}.yaml").write_text(card_to_yaml(card), encoding="utf-8")
    except ValueError as exc:
        raise CLIError(" ".join(str(exc).split())) from exc
    print(
        f"wrote {out / f'{card.name}.ckpt'} ({_size(card.size_bytes)}, sha256 "
        f"{card.sha256[:12]}...) and {out / f'{card.name}.yaml'}"
    )
    return 0
