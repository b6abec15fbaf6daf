"""The ``rdmm`` command: one sub-command per module in :mod:`rdmm_lightning.cli`.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code). Errors a user can fix
raise :class:`CLIError` and end with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

__all__ = ["main", "CLIError"]

SUBCOMMANDS = ("register", "infer", "warp", "evaluate", "data", "train")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``rdmm register: error: ...``), exit code 2; the
    usage is printed by ``--help``, not repeated on every typo. Sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rdmm", description="RDMM / LDDMM / vSVF diffeomorphic registration"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"rdmm_lightning.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rdmm_lightning.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"rdmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run as `python -m rdmm_lightning.cli.main`: use the package module, not this __main__ copy,
    # so that sub-commands and this dispatcher share one CLIError class.
    from rdmm_lightning.cli.main import main as _main

    sys.exit(_main())
