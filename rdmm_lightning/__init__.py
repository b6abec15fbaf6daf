"""rdmm-lightning: RDMM, LDDMM and vSVF diffeomorphic registration for PyTorch Lightning.

Top-level API (imported lazily, so ``import rdmm_lightning`` stays light):

* :func:`register` — register two images (files, Volumes or tensors); see
  :func:`rdmm_lightning.api.register`.
* :func:`infer` — register two images with a trained network checkpoint.
* :func:`warp` — apply a registration folder to images, label maps or points.
* :class:`RegistrationResult` — what every registration method returns.
* :class:`Volume`, :func:`read_image`, :func:`read_label_map` — images in physical space (see
  :mod:`rdmm_lightning.io`).

The subpackages (``io``, ``ops``, ``shooting``, ``optimize``, ``losses``, ``metrics``,
``pipeline``, ...) are imported on first use: ``rdmm_lightning.io.read_image`` works after
``import rdmm_lightning``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "RegistrationResult",
    "Volume",
    "__version__",
    "infer",
    "read_image",
    "read_label_map",
    "register",
    "warp",
]

_LAZY = {
    "infer": "api",
    "register": "api",
    "warp": "api",
    "RegistrationResult": "result",
    "Volume": "io",
    "read_image": "io",
    "read_label_map": "io",
}
"""Public name -> the submodule that defines it (imported on first access)."""


def _submodules() -> set[str]:
    """Names of the public submodules and subpackages (those not starting with ``_``)."""
    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


if TYPE_CHECKING:  # pragma: no cover
    from .api import infer, register, warp
    from .io import Volume, read_image, read_label_map
    from .result import RegistrationResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _submodules():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rdmm_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (``__all__``) and the subpackages, for ``dir()`` and tab completion."""
    return sorted({*__all__, *_submodules()})
