"""The *predict* stage of :mod:`rdmm_lightning.pipeline.run`: a trained network checkpoint.

:func:`load_network` loads a checkpoint once and checks the options of a run (network passes K,
instance-optimisation steps N, device, threads): every such check lives here, and
:class:`OptionError` lets the command line name them as flags. A :class:`Network` then prepares
each pair as the network saw its training pairs (:meth:`Network.prepare`: the data module's
preprocessing record, replayed by :func:`~.pair.prepare_preprocessed_pair`; for checkpoints
without a record, a grid of the module's ``image_shape`` over the target's field of view with
percentile-normalised intensities) and predicts the maps (:meth:`Network.predict`).

The affine stage before a deformable network (``affine``, :class:`~rdmm_lightning.options.
AffineStage`): ``"net"`` the checkpoint's affine net (the default when it has one), ``"opt"``
affine-opt on the prepared pair with the options of ``rdmm register``'s affine stage
(:func:`~.register.register_pair`, model ``affine``), whose matrix the network starts from,
or ``"none"`` (the default without an affine net).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..io import Volume, read_image
from ..io.preprocessing import PreprocessingConfig
from ..nets.precision import resolve_inference_precision, set_network_precision
from ..ops.affine import identity_affine
from ..options import AffineStage, InferencePrecision, NetworkPrecision, either, values
from ..result import RegistrationResult
from ..runtime import choose_num_threads, num_threads, requested_threads, resolve_device
from .config import OptionError
from .pair import PreparedPair, VolumeLike, prepare_pair, prepare_preprocessed_pair

__all__ = ["Network", "check_network_options", "load_network", "resolve_affine_stage"]


def check_network_options(
    num_steps: int | None,
    refine_steps: int,
    model_name: str | None = None,
    name: str = "checkpoint",
) -> None:
    """Raise :class:`OptionError` for ``num_steps < 1``, ``refine_steps < 0`` or refine steps
    for an affine model (``model_name``; ``name`` names the checkpoint)."""
    if num_steps is not None and num_steps < 1:
        raise OptionError(["num_steps"], lambda n: f"{n[0]} must be >= 1; got {num_steps}")
    if refine_steps < 0:
        raise OptionError(["refine_steps"], lambda n: f"{n[0]} must be >= 0; got {refine_steps}")
    if model_name == "affine" and refine_steps:
        raise OptionError(
            ["refine_steps"],
            lambda n: f"{name}: {n[0]} applies to svf/lddmm/rdmm checkpoints, not affine",
        )


def resolve_affine_stage(affine: str | None, module: Any, name: str = "checkpoint") -> str:
    """The affine stage of a run (see the module docstring): ``affine`` checked against the
    checkpoint's ``module`` (None: the module's ``inference_affine`` hyper-parameter when set,
    else ``"net"`` when it has an affine stage, else ``"none"``).

    Raises:
        OptionError: an unknown value, ``"net"`` without an affine net, or ``"opt"``/``"none"``
            for an affine checkpoint.
    """
    is_affine = module.model_name == "affine"
    has_net = is_affine or getattr(module, "affine_net", None) is not None
    if affine is None:
        affine = module.hparams.get("inference_affine")  # e.g. "opt" for a pre-aligned pool
    if affine is None:
        return AffineStage.NET.value if has_net else AffineStage.NONE.value
    if affine not in values(AffineStage):
        raise OptionError(
            ["affine"], lambda n: f"{n[0]} must be {either(AffineStage)}; got {affine!r}"
        )
    if is_affine and affine != AffineStage.NET:
        raise OptionError(
            ["affine"],
            lambda n: f"{name}: {n[0]} {affine} applies to svf/lddmm/rdmm checkpoints, not affine",
        )
    if affine == AffineStage.NET and not has_net:
        raise OptionError(
            ["affine"],
            lambda n: f"{name}: no affine stage in the checkpoint; use {n[0]} opt or none",
        )
    return str(affine)


@dataclass
class Network:
    """A loaded network with the options of one run (see the module docstring).

    Attributes:
        module: an :class:`~rdmm_lightning.models.AffineNetModule` or
            :class:`~rdmm_lightning.models.RegistrationNetModule` (its device is used).
        preprocessing: the data module's preprocessing record, or None (see the module
            docstring).
        name: how messages and ``metrics.json`` name the model (the checkpoint path).
        num_steps: network passes K (None: as trained).
        refine_steps: instance-optimisation steps after the network (not for affine).
        threads: intra-op threads of the network step (None: ``RDMM_NUM_THREADS`` or
            :func:`~rdmm_lightning.runtime.choose_num_threads` for the working grid).
        device: the device asked for (recorded in ``metrics.json``); None: the module's.
        affine: the affine stage, ``"net"``, ``"opt"`` or ``"none"`` (None: ``"net"`` when the
            checkpoint has one, else ``"none"``; :func:`resolve_affine_stage`).
        network_precision: the precision the networks run in (``"float32"``/``"bfloat16"``;
            None: as the module was built), recorded in ``metrics.json``.
        compile_shooting: the shooting right-hand side runs through ``torch.compile``
            (``SolverOptions.compile``), recorded in ``metrics.json``.
    """

    module: Any
    preprocessing: PreprocessingConfig | None = None
    name: str = "checkpoint"
    num_steps: int | None = None
    refine_steps: int = 0
    threads: int | None = None
    device: torch.device | None = None
    affine: str | None = None
    network_precision: str | None = None
    compile_shooting: bool = False

    def __post_init__(self) -> None:
        check_network_options(self.num_steps, self.refine_steps, self.model_name, self.name)
        self.affine = resolve_affine_stage(self.affine, self.module, self.name)

    @property
    def model_name(self) -> str:
        """``"affine"``, ``"svf"``, ``"lddmm"`` or ``"rdmm"``."""
        return self.module.model_name

    def prepare(
        self,
        source: VolumeLike,
        target: VolumeLike,
        *,
        source_label: VolumeLike | None = None,
        target_label: VolumeLike | None = None,
    ) -> PreparedPair:
        """The pair on the network's working grid; ``pair.source`` and ``pair.target``
        ``(1, 1, *image_shape)`` are the network's input.

        Raises:
            ValueError: one line naming the file: 2D/3D mismatch with the model, or the errors
                of :func:`~.pair.prepare_preprocessed_pair` / :func:`~.pair.prepare_pair`.
        """
        module = self.module
        target_volume = target if isinstance(target, Volume) else read_image(target)
        if target_volume.dim != module.dim:
            raise ValueError(
                f"{self.name}: the {module.model_name} model was trained on a {module.dim}D grid "
                f"{tuple(module.image_shape)}, but {target_volume.path or 'the target'} is "
                f"{target_volume.dim}D"
            )
        labels = {"source_label": source_label, "target_label": target_label}
        if self.preprocessing is None:
            return prepare_pair(
                source,
                target_volume,
                working_shape=module.image_shape,
                working_spacing_mode=module.spacing_mode,
                **labels,
            )
        return prepare_preprocessed_pair(
            source,
            target_volume,
            self.preprocessing,
            working_shape=module.image_shape,
            working_spacing_mode=module.spacing_mode,
            **labels,
        )

    def predict(self, pair: PreparedPair) -> RegistrationResult:
        """The maps on the working grid, on the CPU; ``result.extras["runtime"]`` records the
        thread count torch reported during the network step and the module's device. With
        ``affine="opt"``, ``result.time_s`` includes the affine stage and
        ``extras["stages"]`` holds its per-scale records (``metrics.json``'s ``"stages"``)."""
        module = self.module
        src, tgt = pair.source.to(module.device), pair.target.to(module.device)
        aff = self._affine_opt(pair) if self.affine == AffineStage.OPT else None
        with num_threads(choose_num_threads(self.threads, math.prod(pair.working_shape))):
            if module.model_name == "affine":
                result = module.predict(src, tgt, self.num_steps, spacing=pair.domain_spacing)
            else:
                matrix = None if aff is None else aff.affine.to(module.device)
                if self.affine == AffineStage.NONE and module.affine_net is not None:
                    matrix = identity_affine(src.shape[0], module.dim, src)  # skips the stage
                result = module.predict(
                    src,
                    tgt,
                    self.num_steps,
                    self.refine_steps,
                    spacing=pair.domain_spacing,
                    affine_matrix=matrix,
                )
            used = torch.get_num_threads()
        result = result.cpu()
        result.extras["runtime"] = {"threads": used, "device": str(src.device)}
        if aff is not None:
            result.time_s += aff.time_s
            result.extras["stages"] = [dict(r) for r in aff.extras["stages"]]
            result.extras["affine_time_s"] = aff.time_s
        return result

    def _affine_opt(self, pair: PreparedPair) -> RegistrationResult:
        """Affine-opt on the prepared pair, as ``rdmm register``'s affine stage."""
        from .config import resolve_register_config
        from .register import register_pair

        explicit = {"model": "affine", "device": str(self.module.device), "threads": self.threads}
        return register_pair(pair, resolve_register_config(None, (), explicit))

    def config(self, num_steps: int | None) -> dict[str, Any]:
        """The options recorded in ``metrics.json`` (``num_steps``: the passes that ran)."""
        return {
            "checkpoint": self.name,
            "num_steps": num_steps,
            "refine_steps": self.refine_steps,
            "affine": self.affine,
            "device": str(self.module.device if self.device is None else self.device),
            "threads": self.threads,
            "network_precision": self.network_precision,
            "compile_shooting": self.compile_shooting,
            "hparams": dict(self.module.hparams),
        }


def load_network(
    checkpoint: str | os.PathLike,
    *,
    num_steps: int | None = None,
    refine_steps: int = 0,
    device: str | None = None,
    threads: int | None = None,
    affine: str | None = None,
    network_precision: str | None = None,
    compile_shooting: bool = False,
) -> Network:
    """Check the options, load ``checkpoint`` (with its preprocessing record) onto ``device``
    (``"auto"``/None: CUDA when available, else CPU; ``"cpu"``, ``"cuda[:N]"``); ``affine``
    the affine stage (:func:`resolve_affine_stage`); ``network_precision``
    (:class:`~rdmm_lightning.options.InferencePrecision`, None: ``"auto"``): the trained
    precision, except bfloat16 on a device without native bfloat16 (float32 there);
    ``compile_shooting``: shoot with the right-hand side through ``torch.compile`` (faster on
    many pairs of one grid; the first pair compiles; no effect for an affine-net).

    Raises:
        ValueError: one line: a bad option (:class:`OptionError`), device or thread count, or a
            checkpoint that cannot be used (:class:`~rdmm_lightning.models.CheckpointError`).
    """
    from ..models import load_registration_checkpoint
    from ..pretrained import resolve_checkpoint

    check_network_options(num_steps, refine_steps)
    if network_precision is not None and network_precision not in values(InferencePrecision):
        raise OptionError(
            ["network_precision"],
            lambda n: f"{n[0]} must be {either(InferencePrecision)}; got {network_precision!r}",
        )
    requested_threads(threads)  # a bad count or RDMM_NUM_THREADS fails before any work
    dev = resolve_device(device)
    module = load_registration_checkpoint(resolve_checkpoint(checkpoint))  # a path or a name
    trained = module.hparams.get("network_precision") or NetworkPrecision.FLOAT32.value
    precision = resolve_inference_precision(network_precision, trained, dev)
    set_network_precision(module, precision)
    shoots = hasattr(module, "net") and hasattr(module.net, "set_solver_compile")
    if shoots:
        module.net.set_solver_compile(compile_shooting)
    return Network(
        module=module.to(dev),
        preprocessing=module.preprocessing,
        name=os.fspath(checkpoint),
        num_steps=num_steps,
        refine_steps=refine_steps,
        threads=threads,
        device=dev,
        affine=affine,
        network_precision=precision,
        compile_shooting=bool(compile_shooting) and shoots,
    )
