"""The ``--preset`` option sets of ``rdmm register`` and ``rdmm evaluate --model``: one YAML file
per :class:`~rdmm_lightning.options.Preset`, shipped as package data and found through
:mod:`importlib.resources` (so a plain ``pip install .`` has them).

Each file holds keys of the ``rdmm register`` options (:mod:`rdmm_lightning.pipeline.config`,
which layers it as defaults < preset < ``--config`` < flags < ``key=value``). Its first line,
``# NAME: summary``, is the one-line description that ``rdmm register --help`` lists. Only the
standard library is used here, so building the command's help imports no torch.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["preset_summary", "preset_text"]


def preset_text(name: str) -> str:
    """The YAML text of the preset ``name``.

    Raises:
        FileNotFoundError: no such preset file among the package data.
    """
    file = resources.files(__name__).joinpath(f"{name}.yaml")
    if not file.is_file():
        raise FileNotFoundError(f"no preset file {name}.yaml in {__name__}")
    return file.read_text(encoding="utf-8")


def preset_summary(name: str) -> str:
    """The one-line description of the preset ``name`` (its first line, less ``# NAME:``)."""
    first = preset_text(name).splitlines()[0]
    return first.lstrip("# ").removeprefix(f"{name}:").strip()
