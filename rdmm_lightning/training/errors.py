"""The one error type of the training entry point."""

from __future__ import annotations

__all__ = ["TrainingConfigError"]


class TrainingConfigError(ValueError):
    """A config or input problem found before training starts; the message is one line that
    names the offending key or path. ``train.py`` and ``rdmm train`` print it and exit with 2."""
