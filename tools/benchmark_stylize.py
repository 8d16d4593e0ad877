#!/usr/bin/env python
"""Style-transfer benchmark (a script, not a test): seconds per optimisation step and peak memory.

Each case (size x precision x optimizer) runs the real ``cyclestyle.stylize.stylize`` in a fresh
subprocess, so that its peak RSS is its own: the gaps between step callbacks after ``--warmup`` steps,
median. Speed does not depend on the weights, so the VGG is randomly initialised; images are synthetic.
Figures vary +-10% between runs on shared machines: compare the ratios printed in one run.

    python tools/benchmark_stylize.py --sizes 512 --steps 6
    python tools/benchmark_stylize.py --sizes 512 1024 --optimizers lbfgs --json stylize.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(args) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from cyclestyle.stylize import load_vgg, stylize

    torch.manual_seed(0)
    vgg = load_vgg("random")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:args.size, 0:args.size]
    photo = np.stack([x, y, x + y], -1) * (200 / (2 * args.size)) + rng.normal(20, 8, (args.size, args.size, 3))
    content = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    style = Image.fromarray(rng.integers(0, 255, (args.size // 2, args.size // 2, 3), dtype=np.uint8))
    stamps = [time.perf_counter()]
    stylize(content, style, size=args.size, steps=args.warmup + args.steps, optimizer=args.optimizer,
            precision=args.precision, device=args.device, vgg=vgg,
            callback=lambda step: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][args.warmup:]
    return {"s_per_step": statistics.median(gaps), "min": min(gaps), "max": max(gaps),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[512], help="square images of these sides (px)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"])
    p.add_argument("--warmup", type=int, default=2, help="steps not timed (the first builds oneDNN kernels)")
    p.add_argument("--steps", type=int, default=6, help="steps timed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--case", nargs=3, metavar=("SIZE", "PRECISION", "OPTIMIZER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        args.size, args.precision, args.optimizer = int(args.case[0]), args.case[1], args.case[2]
        print(json.dumps(child(args)))
        return
    rows = []
    for size in args.sizes:
        for optimizer in args.optimizers:
            for precision in args.precisions:
                cmd = [sys.executable, __file__, "--case", str(size), precision, optimizer, "--warmup",
                       str(args.warmup), "--steps", str(args.steps), "--device", args.device]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append({"size": size, "optimizer": optimizer, "precision": precision,
                             "load_avg": os.getloadavg()[0], **json.loads(done.stdout.strip().splitlines()[-1])})
                r = rows[-1]
                base = next(b for b in rows if b["size"] == size and b["optimizer"] == optimizer)
                print(f"{size:>5}px {optimizer:<6} {precision:<5} {r['s_per_step']:7.3f} s/step "
                      f"(min {r['min']:.3f}, max {r['max']:.3f}) {base['s_per_step'] / r['s_per_step']:5.2f}x "
                      f"vs {base['precision']}  peak RSS {r['peak_rss_mb']:6.0f} MB  load {r['load_avg']:.1f}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
