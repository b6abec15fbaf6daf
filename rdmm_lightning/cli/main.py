"""The ``rdmm`` command: one sub-command per module in :mod:`rdmm_lightning.cli`.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code). Errors a user can fix
raise :class:`CLIError` and end with a one-line message and exit code 2 (:func:`user_error`
turns the pipeline's one-line ``ValueError`` s into it, naming options as flags). Every sub-command
takes ``--threads N`` (:func:`add_threads_option`); those that compute on a device take
``--device auto|cpu|cuda[:N]`` (:func:`add_device_option`); see :mod:`rdmm_lightning.runtime`.
``rdmm --version`` prints the package version.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import NoReturn

__all__ = [
    "main",
    "CLIError",
    "OPTION_FLAGS",
    "add_device_option",
    "add_threads_option",
    "user_error",
]

SUBCOMMANDS = ("register", "infer", "warp", "evaluate", "data", "train", "models")

OPTION_FLAGS = {
    "affine": "--affine",
    "checkpoint": "--checkpoint",
    "compile_shooting": "--compile-shooting",
    "config": "--config",
    "device": "--device",
    "max_time": "--max-time",
    "model": "--model",
    "network_precision": "--network-precision",
    "num_steps": "--num-steps",
    "overrides": "key=value",
    "refine_steps": "--refine-steps",
    "threads": "--threads",
}
"""How the command line names the pipeline's options in error messages."""


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def user_error(exc: ValueError) -> CLIError:
    """A pipeline error as a :class:`CLIError`: one line, options named as flags
    (:class:`~rdmm_lightning.pipeline.config.OptionError`)."""
    from rdmm_lightning.pipeline.config import OptionError

    text = exc.named(OPTION_FLAGS) if isinstance(exc, OptionError) else str(exc)
    return CLIError(" ".join(text.split()))


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``rdmm register: error: ...``), exit code 2; the
    usage is printed by ``--help``, not repeated on every typo. Sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _thread_count(text: str) -> int:
    if not (text.strip().isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return int(text)


def _device_name(text: str) -> str:
    index = text[5:] if text.startswith("cuda:") else None
    if text not in ("auto", "cpu", "cuda") and not (index is not None and index.isdigit()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N; got {text!r}")
    return text


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (``args.threads``, None when not given)."""
    parser.add_argument(
        "--threads",
        type=_thread_count,
        metavar="N",
        help="CPU threads (default: $RDMM_NUM_THREADS, else chosen from the grid size, the "
        "usable cores and the load of other processes)",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:N]`` (``args.device``; None: the config's, default auto)."""
    parser.add_argument(
        "--device",
        type=_device_name,
        metavar="auto|cpu|cuda[:N]",
        help="where to compute (default auto: CUDA when available, else the CPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    from rdmm_lightning._version import __version__

    parser = OneLineParser(
        prog="rdmm", description="RDMM / LDDMM / vSVF diffeomorphic registration"
    )
    parser.add_argument("--version", action="version", version=f"rdmm-lightning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"rdmm_lightning.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rdmm_lightning.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # a command's --max-time counts from here (args.started)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
    try:
        if getattr(args, "threads", 0) is None:  # --threads not given: check the variable now
            _check_thread_variable()
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"rdmm {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _check_thread_variable() -> None:
    from rdmm_lightning.runtime import requested_threads

    try:
        requested_threads(None)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


if __name__ == "__main__":
    # Run as `python -m rdmm_lightning.cli.main`: use the package module, not this __main__ copy,
    # so that sub-commands and this dispatcher share one CLIError class.
    from rdmm_lightning.cli.main import main as _main

    sys.exit(_main())
