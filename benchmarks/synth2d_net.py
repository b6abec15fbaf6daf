"""Learned registration on the synthetic 2D pairs: train svf/lddmm/rdmm nets, test held-out pairs.

    python benchmarks/synth2d_net.py [--models svf,lddmm,rdmm] [--max-minutes 15] [--threads 2]
        [--size 128] [--train-pairs 200] [--test-pairs 20] [--solver-steps 5] [--lr 1e-3]
        [--net-input low] [--out checkpoints/synth2d_net] [--no-affine] [--with-opt]
        [--set rdmm.omt_weight=0.2 ...] [--checkpoint rdmm=PATH ...] [--num-steps K]

Training pairs are ``generate_synth2d_pair(pair_seed(--train-seed, i), size)`` (each also used
reversed); held-out pairs are those of ``benchmarks/synth2d_opt.py`` (seed 2018, pairs 0..N-1),
so ``python benchmarks/synth2d_opt.py --pairs 20 --size 128`` gives the -opt numbers on the same
pairs. Each model trains on the CPU for at most ``--max-minutes`` (K = 1 network step, rk4),
then every held-out pair is registered by ``RegistrationNetModule.predict``: mean Dice over the
objects (source labels warped with nearest neighbour), negative-Jacobian voxels and folds of
``phi^{-1}``, and inference time per pair (after one warm-up pair; no file I/O). The affine-alone
baseline is affine-opt (:func:`rdmm_lightning.optimize.optimize_affine`). Writes checkpoints,
CSV logs, validation figures and ``rdmm_sigma_t0.png`` (the learned sigma(x) at t = 0) to
``--out``, and prints a markdown table.

``--checkpoint MODEL=PATH`` evaluates a trained checkpoint (e.g. of ``python train.py
experiment=synth2d_rdmm_net``) instead of training that model; ``--num-steps K`` sets the
network passes at test time (default: as trained). The inverse consistency error (ICE) is the
mean over pixels of ``|phi_st^{-1}(phi_ts^{-1}(x)) - x|`` in pixels, with both directions of each
pair registered (:func:`rdmm_lightning.metrics.inverse_consistency_error`).
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from rdmm_lightning.metrics import (
    fold_statistics,
    inverse_consistency_error,
    jacobian_determinant,
    mean_dice,
)
from rdmm_lightning.models import RegistrationNetModule
from rdmm_lightning.ops.warp import warp_labels
from rdmm_lightning.options import Model, NetInput, values
from rdmm_lightning.synthetic.synth2d import Synth2DPair, generate_synth2d_pair, pair_seed
from rdmm_lightning.viz import save_figure

MODELS = values(Model.deformable())


def _tensors(pair: Synth2DPair) -> dict[str, torch.Tensor]:
    return {
        "source": torch.from_numpy(pair.source)[None].float(),
        "target": torch.from_numpy(pair.target)[None].float(),
        "source_label": torch.from_numpy(pair.source_label.astype("int64"))[None],
        "target_label": torch.from_numpy(pair.target_label.astype("int64"))[None],
        "spacing": torch.ones(2),
    }


class SynthPairs(Dataset):
    """Synthetic pairs in the batch format of ``datamodules.datasets``; with ``both_ways`` item
    ``2i + 1`` is pair ``i`` reversed (target -> source)."""

    def __init__(self, pairs: list[Synth2DPair], both_ways: bool = True):
        self.items = [_tensors(p) for p in pairs]
        self.both_ways = both_ways

    def __len__(self) -> int:
        return len(self.items) * (2 if self.both_ways else 1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index // 2 if self.both_ways else index]
        if self.both_ways and index % 2:
            swap = {"source": "target", "target": "source"}
            swap.update(source_label="target_label", target_label="source_label")
            return {swap.get(k, k): v for k, v in item.items()}
        return item


def _parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        model, _, name = key.partition(".")
        if not name or model not in MODELS:
            raise SystemExit(f"--set expects model.key=value with model in {MODELS}; got {item}")
        try:
            out.setdefault(model, {})[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out.setdefault(model, {})[name] = value
    return out


def train(model: str, args, train_set, val_set, overrides: dict[str, Any]):
    """Train one model for at most ``args.max_minutes``; returns (module, seconds, steps)."""
    torch.manual_seed(args.seed)
    kwargs: dict[str, Any] = {
        "image_shape": (args.size, args.size),
        "solver_steps": args.solver_steps,
        "net_input": args.net_input,
        "lr": args.lr,
        "num_steps": 1,
        "similarity": args.similarity,
    }
    kwargs.update(overrides)
    module = RegistrationNetModule(model, **kwargs)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=100_000,
        max_time=timedelta(minutes=args.max_minutes),
        logger=CSVLogger(args.out, name=model),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=args.val_every,
    )
    start = time.perf_counter()
    trainer.fit(
        module,
        DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
        DataLoader(val_set, batch_size=args.batch_size),
    )
    seconds = time.perf_counter() - start
    trainer.save_checkpoint(Path(args.out) / f"{model}.ckpt")
    return module, seconds, trainer.global_step


def _dice(phi_inv: torch.Tensor, spacing, item: dict[str, torch.Tensor]) -> float:
    warped = warp_labels(item["source_label"][None], phi_inv, spacing)
    return float(mean_dice(warped, item["target_label"][None])[0])


def evaluate(
    module: RegistrationNetModule, items: list[dict[str, torch.Tensor]], num_steps: int | None
):
    """Per-pair Dice, negative-Jacobian voxels, folds, inverse consistency error (both
    directions registered) and inference ms (source -> target); plus the results."""
    rows, results = [], []
    module.eval()
    module.predict(items[0]["source"][None], items[0]["target"][None], num_steps)  # warm-up
    for item in items:
        src, tgt = item["source"][None], item["target"][None]
        start = time.perf_counter()
        res = module.predict(src, tgt, num_steps)
        ms = 1000 * (time.perf_counter() - start)
        back = module.predict(tgt, src, num_steps, forward_map=False)
        stats = fold_statistics(jacobian_determinant(res.phi_inv, res.spacing))
        ice = inverse_consistency_error(res.phi_inv, back.phi_inv, res.spacing)
        rows.append(
            {
                "dice": _dice(res.phi_inv, res.spacing, item),
                "neg": float(stats["negative_jacobian_voxels"][0]),
                "folds": float(stats["folds"][0]),
                "ice": float(ice[0]),
                "ms": ms,
            }
        )
        results.append(res)
    return rows, results


def affine_rows(items: list[dict[str, torch.Tensor]]) -> list[dict[str, float]]:
    """The affine-alone baseline: affine-opt per pair."""
    from rdmm_lightning.optimize import optimize_affine

    rows = []
    for item in items:
        start = time.perf_counter()
        res = optimize_affine(item["source"][None], item["target"][None])
        ms = 1000 * (time.perf_counter() - start)
        rows.append({"dice": _dice(res.phi_inv, res.spacing, item), "neg": 0, "folds": 0, "ms": ms})
    return rows


def opt_rows(model: str, items, args) -> list[dict[str, float]]:
    """The -opt result of the same model on the same pairs (slow; ``--with-opt``)."""
    from rdmm_lightning.optimize import optimize_deformable

    rows = []
    for item in items:
        start = time.perf_counter()
        res = optimize_deformable(item["source"][None], item["target"][None], model)
        ms = 1000 * (time.perf_counter() - start)
        stats = fold_statistics(jacobian_determinant(res.phi_inv, res.spacing))
        rows.append(
            {
                "dice": _dice(res.phi_inv, res.spacing, item),
                "neg": float(stats["negative_jacobian_voxels"][0]),
                "folds": float(stats["folds"][0]),
                "ms": ms,
            }
        )
    return rows


def sigma_figure(items, results, sigmas, path: Path, rows: int = 3) -> str:
    """Source, learned sigma(x) at t = 0 (source grid; colour range = the sigma stack), target
    and warped source per pair."""
    rows = min(rows, len(results))
    fig = Figure(figsize=(10, 2.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 4, squeeze=False)
    for r in range(rows):
        item, res = items[r], results[r]
        panels = [
            (item["source"][0], "source", "gray", (0, 1)),
            (res.sigma_t0[0, 0], "sigma(x) at t=0", "viridis", (min(sigmas), max(sigmas))),
            (item["target"][0], "target", "gray", (0, 1)),
            (res.warped[0, 0], "warped source", "gray", (0, 1)),
        ]
        for c, (arr, title, cmap, (lo, hi)) in enumerate(panels):
            im = axes[r, c].imshow(
                arr.detach().numpy(), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest"
            )
            axes[r, c].set_title(title, fontsize=9)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if c == 1:
                fig.colorbar(im, ax=axes[r, c], fraction=0.046, pad=0.02)
    fig.tight_layout()
    return save_figure(fig, path)


def _row(name: str, rows: list[dict[str, float]], extra: str = "") -> str:
    dice = [r["dice"] for r in rows]
    sd = statistics.pstdev(dice) if len(dice) > 1 else 0.0
    ice = f"{statistics.mean(r['ice'] for r in rows):.3f}" if "ice" in rows[0] else "-"
    return (
        f"| {name} | {statistics.mean(dice):.4f} ± {sd:.4f} | {min(dice):.4f} | "
        f"{statistics.mean(r['neg'] for r in rows):.1f} | "
        f"{statistics.mean(r['folds'] for r in rows):.3g} | {ice} | "
        f"{statistics.median(r['ms'] for r in rows):.1f} | {extra} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--max-minutes", type=float, default=15.0, help="training time per model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-pairs", type=int, default=200)
    p.add_argument("--val-pairs", type=int, default=4)
    p.add_argument("--test-pairs", type=int, default=20)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=2018)
    p.add_argument("--seed", type=int, default=0, help="torch seed of the network init")
    p.add_argument("--solver-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--similarity", default="mk-lncc")
    p.add_argument("--net-input", choices=values(NetInput), default="low")
    p.add_argument("--val-every", type=int, default=5, help="validate every N epochs")
    p.add_argument("--out", default="checkpoints/synth2d_net")
    p.add_argument("--no-affine", action="store_true", help="skip the affine-opt baseline")
    p.add_argument("--with-opt", action="store_true", help="also run svf/lddmm/rdmm-opt")
    p.add_argument("--set", action="append", default=[], help="model.key=value hyper-parameter")
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="MODEL=PATH or MODEL=NAME (a shipped model): evaluate, do not train",
    )
    p.add_argument("--num-steps", type=int, default=None, help="network passes K at test time")
    return p.parse_args(argv)


def _parse_checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        model, _, path = item.partition("=")
        if model not in MODELS or not path:
            raise SystemExit(f"--checkpoint expects MODEL=PATH with MODEL in {MODELS}; got {item}")
        out[model] = path
    return out


def _load(path: str) -> tuple[RegistrationNetModule, str]:
    """A trained checkpoint and its training column (epochs and steps it was trained for)."""
    from rdmm_lightning.models import load_registration_checkpoint
    from rdmm_lightning.pretrained import resolve_checkpoint

    path = str(resolve_checkpoint(path))  # a file, or a shipped model's name
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module = load_registration_checkpoint(path)
    return module, f"{path}: epoch {ckpt.get('epoch')}, {ckpt.get('global_step')} steps"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if sorted(set(models) - set(MODELS)):
        raise SystemExit(f"unknown models in {models}; choose from {MODELS}")
    overrides = _parse_sets(args.set)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    gen = generate_synth2d_pair
    checkpoints = _parse_checkpoints(args.checkpoint)
    trains_here = any(model not in checkpoints for model in models)
    num_train, num_val = (args.train_pairs, args.val_pairs) if trains_here else (0, 0)
    train_pairs = [gen(pair_seed(args.train_seed, i), args.size) for i in range(num_train)]
    val_ids = range(num_train, num_train + num_val)
    val_pairs = [gen(pair_seed(args.train_seed, i), args.size) for i in val_ids]
    test_items = [
        _tensors(gen(pair_seed(args.test_seed, i), args.size)) for i in range(args.test_pairs)
    ]
    table: list[str] = []
    identity = [
        {"dice": float(mean_dice(it["source_label"][None], it["target_label"][None])[0]),
         "neg": 0, "folds": 0, "ms": 0.0}
        for it in test_items
    ]  # fmt: skip
    table.append(_row("identity", identity))
    if not args.no_affine:
        table.append(_row("affine-opt (affine alone)", affine_rows(test_items)))
    for model in models:
        if model in checkpoints:
            module, trained = _load(checkpoints[model])
        else:
            module, seconds, steps = train(
                model, args, SynthPairs(train_pairs), SynthPairs(val_pairs, False),
                overrides.get(model, {}),
            )  # fmt: skip
            trained = f"{seconds / 60:.1f} min, {steps} steps"
            print(f"{model}-net trained {seconds:.0f} s ({steps} steps)", file=sys.stderr)
        rows, results = evaluate(module, test_items, args.num_steps)
        k = module.num_steps if args.num_steps is None else args.num_steps
        table.append(_row(f"{model}-net (K={k})", rows, trained))
        if model == "rdmm":
            out = Path(args.out) / "rdmm_sigma_t0.png"
            path = sigma_figure(test_items, results, module.net.sigmas, out)
            print(f"sigma(x) figure: {path}", file=sys.stderr)
        if args.with_opt:
            table.append(_row(f"{model}-opt", opt_rows(model, test_items, args)))
    print(
        f"\nsynth2d {args.size}x{args.size}: "
        + (f"{args.train_pairs} training pairs (x2 reversed), " if trains_here else "")
        + f"{args.test_pairs} held-out pairs (seed {args.test_seed}), {args.threads} thread(s), "
        f"rk4 {args.solver_steps} steps, net input {args.net_input}"
    )
    if overrides:
        print(f"overrides: {overrides}")
    print(
        "\n| method | mean Dice ± sd | min Dice | neg. det J voxels | folds | ICE (px) "
        "| median ms/pair | training |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
