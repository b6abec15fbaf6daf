"""``RegistrationNetModule``: vSVF-, LDDMM- and RDMM-net training and inference."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..losses import map_symmetry_loss, similarity_from_name, weight_range_penalty
from ..losses.compose import registration_terms, weighted_total
from ..losses.labels import warped_label_dice_loss
from ..nets.affine_net import MultiStepAffineNet
from ..nets.registration_net import NetOutput, RegistrationNet, StepOutput
from ..ops.affine import affine_to_map, check_affine, invert_affine
from ..options import AffineStage, either, values
from ..result import RegistrationResult
from ..shooting import MODELS, SolverOptions
from ..shooting.solver import DEFAULT_MAX_CFL
from ..viz import registration_figure
from .base import RegistrationModuleBase
from .hparams import plain
from .refine import REFINE_OPTIMIZERS, refine_last_step

__all__ = ["RegistrationNetModule", "DEFAULT_SIGMAS", "DEFAULT_KERNEL_WEIGHTS", "DEFAULT_PRIOR_H2"]

DEFAULT_SIGMAS = (0.02, 0.04, 0.06, 0.08)
"""Default Gaussian stds (domain units), the reference's synthetic-2D stack."""
DEFAULT_KERNEL_WEIGHTS = (0.1, 0.3, 0.3, 0.3)
"""svf/lddmm multi-Gaussian weights for :data:`DEFAULT_SIGMAS`."""
DEFAULT_PRIOR_H2 = (0.1, 0.3, 0.3, 0.3)
"""RDMM initial squared pre-weights for :data:`DEFAULT_SIGMAS`."""


class RegistrationNetModule(RegistrationModuleBase):
    """LightningModule of the deformable registration nets (see :class:`RegistrationNet`).

    Loss per direction, on the final map: ``similarity_weight * sim(source o phi^{-1}, target)
    + energy_weight * sum_k 1/2 <m0_k, v0_k> + omt_weight * sum_k OMT(w0_k)`` (OMT: RDMM only).
    With ``bidirectional`` (or ``symmetry_weight > 0``) the batch also runs target -> source and
    ``symmetry_weight * ||phi_st^{-1} o phi_ts^{-1} - id||^2`` is added. ``num_steps``,
    ``symmetry_weight``, ``bidirectional`` and the three loss weights are plain attributes that
    schedule callbacks (:mod:`.callbacks`) change; their last values are saved in checkpoints.

    Args:
        model: ``"svf"``, ``"lddmm"`` or ``"rdmm"``.
        image_shape: training grid (2 or 3 sizes; required); ``rdmm infer`` resamples inputs
            to it.
        spacing_mode: ``"parity"`` or ``"physical"`` domain spacing.
        sigmas: Gaussian stds (domain units); default :data:`DEFAULT_SIGMAS`.
        kernel_weights: svf/lddmm multi-Gaussian weights (default :data:`DEFAULT_KERNEL_WEIGHTS`
            with the default sigmas, else uniform).
        weight_sigma: RDMM pre-weight smoothing std.
        prior_h2: RDMM initial squared pre-weights (default :data:`DEFAULT_PRIOR_H2` with the
            default sigmas, else uniform).
        features: UNet channels per level.
        lowres_factor: shooting grid factor (default 0.5).
        solver_method, solver_steps: integration (default rk4 with 10 steps).
        solver_checkpoint: fixed-step backward recomputes each step from the state at its start
            (default; :class:`~rdmm_lightning.shooting.SolverOptions`); ``False`` keeps the graph
            of every step: about 1.5x faster shooting backward on the small grids the networks
            train on, at several times the memory (double backward needs it too).
        solver_max_cfl: Courant limit of the fixed-step solver (``SolverOptions.max_cfl``): a
            shot whose initial velocity moves more voxels per step takes more steps instead
            of overflowing; ``None`` keeps ``solver_steps`` always.
        solver_compile: evaluate the shooting right-hand side through ``torch.compile``
            (``SolverOptions.compile``): fused kernels, about 2x faster RDMM shooting on a 64x64
            grid on a CPU, after tens of seconds of compiling on the first step.
        net_input: ``"full"`` or ``"low"`` resolution network inputs.
        momentum_clamp: optional bound on ``|m0|``.
        image_force: the momentum net also sees the image force ``(I - J) grad`` and adds a learnt
            multiple of it (:class:`~rdmm_lightning.nets.heads.MomentumNet`; default off).
        pre_weight_activation: ``"softplus"`` or ``"relu"``.
        network_precision: compute precision of the UNets: ``"float32"`` (default) or
            ``"bfloat16"`` mixed precision (:class:`~rdmm_lightning.options.NetworkPrecision`;
            weights, shooting and losses stay float32); also the affine stage's. On a CPU with
            AMX the UNets of the 64x80x80 experiments run about 10x faster; without bfloat16
            hardware it is slower.
        num_steps: refinement steps K (schedulable).
        similarity, similarity_kwargs: similarity name (default ``"mk-lncc"``) and arguments.
        similarity_weight, energy_weight, omt_weight: loss weights (schedulable; e.g. OMT off
            for the first epochs as in the reference).
        omt_power: exponent of the OMT penalty.
        weight_range_weight: RDMM: weight of the weight-range penalty that pulls the smoothed
            pre-weights towards the prior ``prior_h2`` (default 1; schedulable: the reference
            trains with it first and lets OMT take over later). Without it the pre-weight net
            put every voxel on one extreme of the sigma stack on the synthetic 2D set (all
            sigma_min without OMT, all sigma_max with OMT 0.1); with it sigma(x) stays near the
            prior and drops near moving object edges.
        symmetry_weight, bidirectional: symmetric training (schedulable).
        label_weight: weight of the auxiliary label loss (schedulable; default 0: unsupervised):
            soft Dice of the warped source labels against the target labels
            (:func:`~rdmm_lightning.losses.labels.warped_label_dice_loss`), on batches that
            carry ``source_label``/``target_label`` (datamodule ``train_labels=true``). The
            semi-supervised variant of VoxelMorph; inference needs no labels.
        label_max_classes: the label loss on at most this many labels per step, drawn at random
            (None: all; with 32 of IXI's 148 labels the loss at 64x80x80, stride 2, takes 0.24 s
            forward + backward instead of 1.7 s, 1 thread).
        label_stride: the label loss is taken on every ``label_stride``-th voxel per axis
            (default 2: 8x fewer samples in 3D; the target's labels exact there).
        affine_checkpoint: an :class:`AffineNetModule` checkpoint to start from (its
            architecture is then copied into ``affine_net``; with ``affine_net`` already set, as
            when rebuilding from this module's own checkpoint, a missing file is ignored since
            the weights come from that checkpoint).
        affine_net: constructor arguments of a :class:`MultiStepAffineNet` (None: no affine
            stage unless ``affine_checkpoint``).
        affine_trainable: fine-tune the affine net (default frozen).
        affine_steps: affine passes (default: the affine net's ``num_steps``).
        inference_affine: the affine stage ``rdmm infer`` runs by default before this network
            (:class:`~rdmm_lightning.options.AffineStage`; None: the affine net when there is
            one, else none). ``"opt"`` for networks trained on an affinely pre-aligned pool
            (``rdmm data align``): affine-opt then aligns each new pair first.
        refine_optimizer, refine_lr: test-time instance optimisation (``"lbfgs"`` or ``"adam"``;
            lr default 1 for L-BFGS, 1e-3 for Adam).
        lr, weight_decay, lr_step_epochs, lr_gamma: Adam and an optional StepLR.
        log_figures: log one validation figure per epoch.
    """

    loss_terms = ("loss", "similarity", "energy", "omt", "weight_range", "symmetry", "label")
    schedule_attributes = (
        "num_steps",
        "symmetry_weight",
        "bidirectional",
        "similarity_weight",
        "energy_weight",
        "omt_weight",
        "weight_range_weight",
        "label_weight",
    )

    def __init__(
        self,
        model: str = "rdmm",
        image_shape: Sequence[int] | None = None,
        spacing_mode: str = "parity",
        sigmas: Sequence[float] | None = None,
        kernel_weights: Sequence[float] | None = None,
        weight_sigma: float = 0.05,
        prior_h2: Sequence[float] | None = None,
        features: Sequence[int] = (16, 32, 32, 64),
        lowres_factor: float = 0.5,
        solver_method: str = "rk4",
        solver_steps: int = 10,
        solver_checkpoint: bool = True,
        solver_max_cfl: float | None = DEFAULT_MAX_CFL,
        solver_compile: bool = False,
        net_input: str = "full",
        momentum_clamp: float | None = None,
        pre_weight_activation: str = "softplus",
        image_force: bool = False,
        network_precision: str = "float32",
        num_steps: int = 1,
        similarity: str = "mk-lncc",
        similarity_kwargs: Mapping[str, Any] | None = None,
        similarity_weight: float = 1.0,
        energy_weight: float = 1.0,
        omt_weight: float = 0.1,
        omt_power: float = 1.0,
        weight_range_weight: float = 1.0,
        symmetry_weight: float = 0.0,
        bidirectional: bool = False,
        label_weight: float = 0.0,
        label_stride: int = 2,
        label_max_classes: int | None = None,
        affine_checkpoint: str | None = None,
        affine_net: Mapping[str, Any] | None = None,
        affine_trainable: bool = False,
        affine_steps: int | None = None,
        inference_affine: str | None = None,
        refine_optimizer: str = "lbfgs",
        refine_lr: float | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_step_epochs: int | None = None,
        lr_gamma: float = 0.5,
        log_figures: bool = True,
    ):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}; got {model!r}")
        if inference_affine is not None and inference_affine not in values(AffineStage):
            raise ValueError(
                f"inference_affine must be {either(AffineStage)} or null; got {inference_affine!r}"
            )
        if refine_optimizer not in REFINE_OPTIMIZERS:
            raise ValueError(
                f"refine_optimizer must be one of {REFINE_OPTIMIZERS}; got {refine_optimizer!r}"
            )
        self.save_hyperparameters()
        self.model_name = model
        if sigmas is None:
            sigmas = DEFAULT_SIGMAS
            kernel_weights = DEFAULT_KERNEL_WEIGHTS if kernel_weights is None else kernel_weights
            prior_h2 = DEFAULT_PRIOR_H2 if prior_h2 is None else prior_h2
        if model == "rdmm":
            kernel_weights = None
        else:
            prior_h2 = None
        self.hparams.update(sigmas=sigmas, kernel_weights=kernel_weights, prior_h2=prior_h2)
        self._setup_common(image_shape, spacing_mode)
        solver = SolverOptions(
            solver_method, int(solver_steps), checkpoint=bool(solver_checkpoint),
            max_cfl=None if solver_max_cfl is None else float(solver_max_cfl),
            compile=bool(solver_compile),
        )  # fmt: skip
        self.net = RegistrationNet(
            model, self.dim, sigmas, kernel_weights, weight_sigma, prior_h2, features,
            lowres_factor, solver, net_input,
            momentum_clamp, pre_weight_activation, image_force, network_precision,
        )  # fmt: skip
        self.similarity = similarity_from_name(similarity, **dict(similarity_kwargs or {}))
        self.affine_net = self._build_affine(affine_checkpoint, affine_net, affine_trainable)
        self.hparams.update(plain(dict(self.hparams)))
        self.num_steps = int(num_steps)
        self.symmetry_weight = float(symmetry_weight)
        self.bidirectional = bool(bidirectional)
        self.similarity_weight = float(similarity_weight)
        self.energy_weight = float(energy_weight)
        self.omt_weight = float(omt_weight)
        self.weight_range_weight = float(weight_range_weight)
        self.label_weight = float(label_weight)
        if int(label_stride) != label_stride or label_stride < 1:
            raise ValueError(f"label_stride must be a positive integer; got {label_stride}")
        if label_max_classes is not None and (
            int(label_max_classes) != label_max_classes or label_max_classes < 1
        ):
            raise ValueError(
                f"label_max_classes must be a positive integer or null; got {label_max_classes}"
            )

    # ---------------------------------------------------------------------------- affine
    def _build_affine(
        self, path: str | None, config: Mapping[str, Any] | None, trainable: bool
    ) -> MultiStepAffineNet | None:
        from .checkpoint import load_registration_checkpoint

        if path is None and config is None:
            return None
        source = None
        if config is None or (path is not None and _exists(path)):
            source = load_registration_checkpoint(path, "affine", expected_dim=self.dim)
            if config is None:
                config = source.net_config()
                self.hparams["affine_net"] = config
        config = dict(config)
        if int(config.get("dim", self.dim)) != self.dim:
            raise ValueError(f"affine_net is {config.get('dim')}D but the model is {self.dim}D")
        config["dim"] = self.dim
        net = MultiStepAffineNet(**config, precision=self.hparams.network_precision)
        if source is not None:
            net.load_state_dict(source.net.state_dict())
        net.requires_grad_(bool(trainable))
        return net

    def affine_maps(
        self, source: Tensor, target: Tensor, spacing: Sequence[float], forward: bool
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """``(A map, A^{-1} map or None, [A | b])`` on the full grid; Nones without affine."""
        if self.affine_net is None:
            return None, None, None
        grad = self.hparams.affine_trainable and torch.is_grad_enabled()
        with contextlib.nullcontext() if grad else torch.no_grad():
            out = self.affine_net(source, target, spacing, self.hparams.affine_steps)
        return _matrix_maps(out.matrix, tuple(source.shape[2:]), spacing, forward)

    # ------------------------------------------------------------------------------ loss
    def objective(
        self, warped: Tensor, target: Tensor, steps: Sequence[StepOutput], low_spacing
    ) -> dict[str, Tensor]:
        """Loss terms of one direction: ``loss``, ``similarity``, ``energy``, ``omt``."""
        rdmm = self.model_name == "rdmm"
        terms = registration_terms(
            self.similarity(warped, target),
            [(s.m0, s.shot.velocity0) for s in steps],
            low_spacing,
            weights0=[s.shot.weights0 for s in steps] if rdmm else None,
            sigmas=self.net.sigmas,
            omt_power=self.hparams.omt_power,
        )
        if rdmm and self.weight_range_weight > 0:
            prior = self.net.prior_h2
            wr = sum(weight_range_penalty(s.shot.weights0, prior, low_spacing) for s in steps)
            terms["weight_range"] = wr
        terms["loss"] = weighted_total(
            terms,
            {
                "similarity": self.similarity_weight,
                "energy": self.energy_weight,
                "omt": self.omt_weight,
                "weight_range": self.weight_range_weight,
            },
        )
        return terms

    def label_term(
        self, source_label: Tensor, target_label: Tensor, phi_inv: Tensor, spacing
    ) -> Tensor:
        """Auxiliary label loss of ``phi_inv: (B, D, *S)`` on every ``label_stride``-th voxel."""
        return warped_label_dice_loss(
            source_label, target_label, phi_inv, spacing, int(self.hparams.label_stride),
            max_labels=self.hparams.get("label_max_classes"),
        )  # fmt: skip

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        spacing: Sequence[float],
        num_steps: int | None = None,
        forward_map: bool = False,
        affine_matrix: Tensor | None = None,
    ) -> tuple[NetOutput, Tensor | None]:
        """Affine stage (if any) then K refinement steps; returns the net output and the
        affine matrices (or None). ``affine_matrix`` ``(B, D, D + 1)`` (pull-back ``[A | b]`` on
        domain coordinates, as :func:`~rdmm_lightning.ops.affine.affine_to_map` takes it)
        replaces the affine stage's output (e.g. affine-opt's; the identity skips the stage)."""
        if affine_matrix is None:
            init, init_fwd, matrix = self.affine_maps(source, target, spacing, forward_map)
        else:
            check_affine(affine_matrix, "affine_matrix", batch=source.shape[0], dim=self.dim)
            matrix = affine_matrix.to(dtype=source.dtype, device=source.device)
            init, init_fwd, _ = _matrix_maps(matrix, tuple(source.shape[2:]), spacing, forward_map)
        steps = self.num_steps if num_steps is None else int(num_steps)
        out = self.net(
            source, target, spacing, num_steps=steps, initial_map=init,
            initial_forward=init_fwd, forward_map=forward_map,
        )  # fmt: skip
        return out, matrix

    def _step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> Tensor:
        source, target = batch["source"], batch["target"]
        b, shape = source.shape[0], tuple(source.shape[2:])
        spacing = self.batch_spacing(batch, shape)
        both = self.bidirectional or self.symmetry_weight > 0
        if both:
            source, target = torch.cat([source, target]), torch.cat([target, source])
        out, _ = self(source, target, spacing)
        terms = self.objective(out.warped, target, out.steps, out.low_spacing)
        if both:
            sym = map_symmetry_loss(out.phi_inv[:b], out.phi_inv[b:], spacing)
            terms["symmetry"] = sym
            terms["loss"] = terms["loss"] + self.symmetry_weight * sym
        if self.label_weight > 0 and "source_label" in batch and "target_label" in batch:
            labels = batch["source_label"], batch["target_label"]
            if both:
                labels = torch.cat(labels), torch.cat(labels[::-1])
            terms["label"] = self.label_term(*labels, out.phi_inv, spacing)
            terms["loss"] = terms["loss"] + self.label_weight * terms["label"]
        for name, value in terms.items():
            self.log_value(stage, name, value, b)
        if stage != "train":
            self.log_map_metrics(stage, out.phi_inv[:b], spacing, batch)
            if stage == "val" and self.want_figure(batch_idx):
                self._figure_of(source, target, out, spacing)
        return terms["loss"]

    def _figure_of(self, source: Tensor, target: Tensor, out: NetOutput, spacing) -> None:
        sigma = None
        if self.model_name == "rdmm":
            shape = tuple(source.shape[2:])
            sigma = self.net.sigma_maps(out.steps[-1], shape, spacing, out.low_spacing)[0][0]
        fig = registration_figure(
            source[0], target[0], out.warped[0].detach(), out.phi_inv[0].detach(), spacing,
            sigma=sigma, sigma_range=(min(self.net.sigmas), max(self.net.sigmas)),
            title=f"{self.model_name}-net, epoch {self.current_epoch}",
        )  # fmt: skip
        self.remember_figure(fig)

    # ------------------------------------------------------------------------- inference
    def predict(
        self,
        source: Tensor,
        target: Tensor,
        num_steps: int | None = None,
        refine_steps: int = 0,
        *,
        spacing: Sequence[float] | None = None,
        forward_map: bool = True,
        affine_matrix: Tensor | None = None,
    ) -> RegistrationResult:
        """Register ``source`` to ``target`` ``(B, 1, *S)`` in [0, 1] (any size).

        Args:
            num_steps: refinement steps K (default: the module's current ``num_steps``).
            refine_steps: N > 0 runs test-time instance optimisation of the last step's
                ``m0`` (and ``h0``) from the network's prediction, with the training loss.
            spacing: domain spacing of the grid (default: from ``spacing_mode``, isotropic).
            forward_map: also integrate the forward map ``phi`` (needed for the inverse
                displacement; without it ``phi`` is None and RDMM ``sigma_t0`` stays in the
                frame of the last step).
            affine_matrix: ``(B, D, D + 1)`` affine pull-back on domain coordinates that
                replaces the affine stage (e.g. from affine-opt; see :meth:`forward`).

        Returns:
            :class:`RegistrationResult` on the input grid with ``phi_inv``, ``phi``, ``warped``,
            ``affine`` (the affine stage's or ``affine_matrix``, if any), RDMM
            ``sigma_t0``/``sigma_t1`` and ``extras`` ``m0``/``h0`` (last step, low grid),
            ``num_steps``, ``refine_steps``.
        """
        start = time.perf_counter()
        self.check_images(source, target)
        shape = tuple(source.shape[2:])
        spacing = self.domain_spacing(shape) if spacing is None else spacing
        spacing = tuple(float(h) for h in spacing)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out, matrix = self(
                    source, target, spacing, num_steps, forward_map, affine_matrix=affine_matrix
                )
            history: list[dict[str, Any]] = []
            if refine_steps > 0:
                out, history = refine_last_step(self, source, target, spacing, out, refine_steps)
        finally:
            self.train(was_training)
        return self._result(out, matrix, spacing, start, history, num_steps, refine_steps)

    @torch.no_grad()
    def _result(self, out, matrix, spacing, start, history, num_steps, refine_steps):
        sigma_t0 = sigma_t1 = None
        last = out.steps[-1]
        if self.model_name == "rdmm":
            shape = tuple(out.phi_inv.shape[2:])
            sigma_t0, sigma_t1 = self.net.sigma_maps(last, shape, spacing, out.low_spacing)
        return RegistrationResult(
            model=self.model_name,
            phi_inv=out.phi_inv.detach(),
            warped=out.warped.detach(),
            spacing=spacing,
            phi=None if out.phi is None else out.phi.detach(),
            affine=None if matrix is None else matrix.detach(),
            sigma_t0=sigma_t0,
            sigma_t1=sigma_t1,
            time_s=time.perf_counter() - start,
            history=history,
            extras={
                "m0": last.m0.detach(),
                "h0": None if last.h0 is None else last.h0.detach(),
                "low_spacing": out.low_spacing,
                "num_steps": len(out.steps),
                "refine_steps": int(refine_steps),
            },
        )


def _exists(path: str) -> bool:
    return os.path.isfile(os.fspath(path))


def _matrix_maps(
    matrix: Tensor, shape: Sequence[int], spacing: Sequence[float], forward: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(A map, A^{-1} map or None, matrix)`` of ``(B, D, D + 1)`` matrices on the grid
    ``shape`` (maps ``(B, D, *S)``)."""
    initial = affine_to_map(matrix, shape, spacing)
    inverse = affine_to_map(invert_affine(matrix), shape, spacing) if forward else None
    return initial, inverse, matrix
