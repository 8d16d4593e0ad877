#!/usr/bin/env python
"""Translation benchmark (a script, not a test): images/s and peak memory, fp32 vs bf16.

Each case runs in a fresh subprocess so that its peak RSS is its own. Inputs are synthetic; the
generator is randomly initialised (speed does not depend on the weights). Figures vary +-10% between
runs on shared machines: compare the ratios printed in one run.

    python tools/benchmark_translate.py --n 16 --large 4096 3072 --tile 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(args) -> dict:
    import torch

    from cyclestyle.config import ModelConfig
    from cyclestyle.nets import build_generator
    from cyclestyle.translate import Translator

    torch.manual_seed(0)
    t = Translator(build_generator(ModelConfig(generator=args.generator, ngf=args.ngf)), 4, args.device,
                   args.precision)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)  # GPU work is async
    if args.case == "batch":
        x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
        t.translate_tensor(x)  # warm-up
        times = []
        for _ in range(max(1, args.n // args.batch)):
            start = time.perf_counter()
            t.translate_tensor(x)
            sync()
            times.append(time.perf_counter() - start)
        seconds = sorted(times)[len(times) // 2]
        result = {"images_per_s": args.batch / seconds, "s_per_batch": seconds}
    else:
        w, h = args.large
        x = torch.rand(1, 3, h, w) * 2 - 1
        start = time.perf_counter()
        t.translate_tiled(x, tile=args.tile, overlap=args.overlap)
        sync()
        result = {"seconds": time.perf_counter() - start}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=16, help="images timed per batch case")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--large", type=int, nargs=2, default=(4096, 3072), metavar=("W", "H"))
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--generator", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--case", choices=("batch", "large"), help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(child(args)))
        return
    rows = []
    passed = list(sys.argv[1:])
    if "--json" in passed:  # the children print their results; only the parent writes the file
        i = passed.index("--json")
        del passed[i:i + 2]
    for case in ("batch", "large"):
        for precision in args.precisions:
            cmd = [sys.executable, __file__, "--case", case, "--precision", precision] + passed
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append({"case": case, "precision": precision, **json.loads(out)})
    base = {r["case"]: r for r in rows if r["precision"] == "fp32"}
    print(f"{'case':<34} {'precision':<9} {'result':>16} {'vs fp32':>8} {'peak RSS':>10}")
    for r in rows:
        if r["case"] == "batch":
            label = f"{args.size}px x{args.batch}, {args.generator}"
            value, ratio = f"{r['images_per_s']:.2f} img/s", r["images_per_s"] / base["batch"]["images_per_s"]
        else:
            label = f"{args.large[0]}x{args.large[1]} tiled {args.tile}/{args.overlap}"
            value, ratio = f"{r['seconds']:.1f} s", base["large"]["seconds"] / r["seconds"]
        gpu = f"  GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""
        print(f"{label:<34} {r['precision']:<9} {value:>16} {ratio:>7.2f}x {r['peak_rss_mb']:>8.0f} MB{gpu}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
