"""rdmm-lightning: RDMM, LDDMM and vSVF diffeomorphic registration for PyTorch Lightning.

Top-level API (imported lazily, so ``import rdmm_lightning`` stays light):

* :func:`register` — register two images (files, Volumes or tensors); see
  :func:`rdmm_lightning.api.register`.
* :func:`warp` — apply a registration folder to images, label maps or points.
* :class:`RegistrationResult` — what every registration method returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["RegistrationResult", "__version__", "register", "warp"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import register, warp
    from .registration import RegistrationResult


def __getattr__(name: str) -> Any:
    if name in ("register", "warp"):
        from . import api

        return getattr(api, name)
    if name == "RegistrationResult":
        from .registration import RegistrationResult

        return RegistrationResult
    raise AttributeError(f"module 'rdmm_lightning' has no attribute {name!r}")
