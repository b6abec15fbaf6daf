"""The lung and knee presets against ANTs SyN on the built-in phantoms (issue 16).

    python benchmarks/presets_vs_ants.py [--knee-pairs 2] [--chest-size 128] [--threads 1]
        [--models rdmm,lddmm]

* chest: the 2D chest phantom of ``benchmarks/predefined_region.py`` (lungs expand downwards by
  12%), lung Dice; ``--preset lung``.
* knee: synthetic 3D knee phantoms (``rdmm data synth3d``, right knees, 48x64x64 at 2x1x1 mm),
  subject ``2k + 1`` registered to subject ``2k``, mean Dice over the phantom's labels;
  ``--preset knee``.

Each registration runs through ``rdmm_lightning.register`` (the path of ``rdmm register``, affine
included, preset settings) on NIfTI files; ANTs SyN (``ants.registration(type_of_transform=
'SyN')``, defaults, rigid + affine + SyN with MI) on the same files, labels warped with
``genericLabel``. Dice of both: :func:`rdmm_lightning.metrics.mean_dice` on the target's label
grid. Needs ``antspyx`` (the ``[baselines]`` extra). Prints one row per pair and method and a
markdown table of the means.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.predefined_region import chest_pair  # noqa: E402
from rdmm_lightning import register  # noqa: E402
from rdmm_lightning.metrics import mean_dice  # noqa: E402
from rdmm_lightning.synthetic.synth3d import write_synth3d_pool  # noqa: E402


def _save(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def chest_files(folder: Path, size: int) -> list[tuple[str, dict[str, Path]]]:
    src, tgt, src_lungs, tgt_lungs, _ = chest_pair(size)
    files = {
        "source": _save(src, folder / "chest_source.nii.gz"),
        "target": _save(tgt, folder / "chest_target.nii.gz"),
        "source_label": _save(src_lungs.astype(np.uint8), folder / "chest_source_label.nii.gz"),
        "target_label": _save(tgt_lungs.astype(np.uint8), folder / "chest_target_label.nii.gz"),
    }
    return [("chest", files)]


def knee_files(folder: Path, pairs: int) -> list[tuple[str, dict[str, Path]]]:
    pool = folder / "knees"
    write_synth3d_pool(pool, subjects=2 * pairs, sides=("right",))
    out = []
    for k in range(pairs):
        name = [f"sub-{2 * k + i:04d}_v0_right.nii.gz" for i in (1, 0)]
        files = {
            "source": pool / "images" / name[0],
            "target": pool / "images" / name[1],
            "source_label": pool / "labels" / name[0],
            "target_label": pool / "labels" / name[1],
        }
        out.append((f"knee {2 * k + 1}->{2 * k}", files))
    return out


def ours(files: dict[str, Path], model: str, preset: str, threads: int) -> dict[str, float]:
    start = time.perf_counter()
    result = register(
        str(files["source"]), str(files["target"]), model, preset=preset, threads=threads,
        source_label=str(files["source_label"]), target_label=str(files["target_label"]),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return {"dice": float(result.extras["metrics"]["dice"]["mean"]), "time": seconds}


def ants_syn(files: dict[str, Path]) -> dict[str, float]:
    import ants

    start = time.perf_counter()
    fixed, moving = ants.image_read(str(files["target"])), ants.image_read(str(files["source"]))
    reg = ants.registration(fixed, moving, type_of_transform="SyN")
    labels = ants.image_read(str(files["source_label"]))
    warped = ants.apply_transforms(fixed, labels, reg["fwdtransforms"], interpolator="genericLabel")
    seconds = time.perf_counter() - start
    w = torch.from_numpy(warped.numpy().round().astype(np.int64))[None, None]
    t = torch.from_numpy(np.asarray(nib.load(str(files["target_label"])).dataobj).astype(np.int64))
    return {"dice": float(mean_dice(w, t[None, None])[0]), "time": seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--knee-pairs", type=int, default=2)
    p.add_argument("--chest-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="rdmm,lddmm")
    args = p.parse_args(argv)
    try:
        import ants  # noqa: F401
    except ImportError:
        raise SystemExit("presets_vs_ants.py needs antspyx: pip install '.[baselines]'") from None
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = [("lung", *c) for c in chest_files(folder, args.chest_size)]
        cases += [("knee", *c) for c in knee_files(folder, args.knee_pairs)]
        for preset, name, files in cases:
            data = name.split()[0]
            for model in models:
                r = ours(files, model, preset, args.threads)
                rows.setdefault((data, f"{model}-opt --preset {preset}"), []).append(r)
                print(f"{name}: {model} --preset {preset} Dice {r['dice']:.4f} {r['time']:.1f} s")
            r = ants_syn(files)
            rows.setdefault((data, "ANTs SyN (defaults)"), []).append(r)
            print(f"{name}: ANTs SyN Dice {r['dice']:.4f} {r['time']:.1f} s")
    print(f"\n{args.threads} thread(s); chest {args.chest_size}^2, {args.knee_pairs} knee pair(s)")
    print("\n| data | method | mean Dice | s/pair |\n|---|---|---|---|")
    for (data, method), rs in rows.items():
        dice = statistics.mean(r["dice"] for r in rs)
        seconds = statistics.mean(r["time"] for r in rs)
        print(f"| {data} | {method} | {dice:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
