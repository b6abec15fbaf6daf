"""Hydra's command-line options, for front ends that pass them on (``rdmm train``); imports only
Hydra's argument parser, so building the ``rdmm`` parser stays fast."""

from __future__ import annotations

from typing import Any

from hydra._internal.utils import get_args_parser

__all__ = ["hydra_options"]


def hydra_options() -> list[tuple[list[str], Any]]:
    """Hydra's command-line options other than ``--help``: (option strings, argparse ``nargs``)."""
    return [
        (list(action.option_strings), action.nargs)
        for action in get_args_parser()._actions
        if action.option_strings and action.dest != "help"
    ]
