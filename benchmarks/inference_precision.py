"""Network inference time of a shipped model in float32 and bfloat16, with the CPU's full
instruction set and with oneDNN capped below bfloat16 (``ONEDNN_MAX_CPU_ISA``, as on CPUs
without AVX512-BF16/AMX), and what ``--network-precision auto`` picks in each case.

    python benchmarks/inference_precision.py [--model brain-t1-rdmm-net] [--caps DEFAULT,AVX2]
        [--num-steps 2] [--repeats 3] [--threads 1]

Each cap runs in a fresh process (oneDNN reads the variable once). Timed: the network's K passes
(``module(source, target, spacing, num_steps=K)`` under ``torch.no_grad``) on the model's grid
with random images, median of ``--repeats`` after a warm-up; no file I/O, no affine stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _measure(model: str, num_steps: int, repeats: int, threads: int) -> dict:
    import torch

    from rdmm_lightning.models import load_registration_checkpoint
    from rdmm_lightning.nets.precision import resolve_inference_precision, set_network_precision
    from rdmm_lightning.options import NetworkPrecision
    from rdmm_lightning.pretrained import resolve_checkpoint

    torch.set_num_threads(threads)
    module = load_registration_checkpoint(resolve_checkpoint(model)).eval()
    shape = tuple(module.hparams.image_shape)
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 1, *shape, generator=generator)
    target = torch.rand(1, 1, *shape, generator=generator)
    spacing = [1.0 / (n - 1) for n in shape]
    trained = module.hparams.get("network_precision") or "float32"
    row = {"shape": shape, "trained": trained}
    row["auto"] = resolve_inference_precision("auto", trained, "cpu")
    for precision in (p.value for p in NetworkPrecision):
        set_network_precision(module, precision)
        times = []
        with torch.no_grad():
            module(source, target, spacing, num_steps=num_steps)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                module(source, target, spacing, num_steps=num_steps)
                times.append(time.perf_counter() - start)
        row[precision] = sorted(times)[len(times) // 2]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="brain-t1-rdmm-net", help="shipped name or .ckpt")
    parser.add_argument("--caps", default="DEFAULT,AVX2", help="ONEDNN_MAX_CPU_ISA values")
    parser.add_argument("--num-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_measure(args.model, args.num_steps, args.repeats, args.threads)))
        return 0
    import torch

    print(f"model {args.model}, K={args.num_steps}, {args.threads} thread(s), torch "
          f"{torch.__version__}, {platform.processor() or platform.machine()}; s: median of "
          f"{args.repeats} after a warm-up")  # fmt: skip
    print("| ONEDNN_MAX_CPU_ISA | grid | float32 s | bfloat16 s | bfloat16 / float32 | auto |")
    print("|---|---|---|---|---|---|")
    for cap in [c.strip() for c in args.caps.split(",") if c.strip()]:
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=cap)
        command = [sys.executable, __file__, "--worker", "--model", args.model]
        command += ["--num-steps", str(args.num_steps), "--repeats", str(args.repeats)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"error: cap {cap}: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        grid = "x".join(map(str, row["shape"]))
        ratio = row["bfloat16"] / row["float32"]
        print(f"| {cap} | {grid} | {row['float32']:.2f} | {row['bfloat16']:.2f} | {ratio:.2f} "
              f"| {row['auto']} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
