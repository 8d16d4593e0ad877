#!/usr/bin/env python
"""Training and translation speed (a script, not a test): one table, ratios against plain fp32 eager.

Each mode runs the real ``cyclestyle.training.train`` loop (data loading included) on synthetic images
in a fresh subprocess, so that its peak memory is its own: N warm-up + M timed optimizer steps, median
seconds per step. FLOPs of one step are counted with ``torch.utils.flop_counter``; "% peak" compares the
achieved FLOP/s with the best of a large matmul and a large convolution in the same precision, measured
in the same run (these machines are
shared and noisy: compare the ratios of one run, not figures across runs).

    python tools/benchmark.py --size 256 --modes fp32 bf16 bf16+compile
    python tools/benchmark.py --size 128 --json bench128.json
    python tools/benchmark.py --size 128 --modes bf16 --no-translate --profile 3   # where the time goes
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {  # name -> (train.mixed_precision, train.compile); "default" is what `cyclestyle train` does unasked
    "default": ("auto", False),
    "default+compile": ("auto", True),
    "fp32": ("no", False),
    "bf16": ("bf16", False),
    "fp16": ("fp16", False),
    "fp32+compile": ("no", True),
    "bf16+compile": ("bf16", True),
    "fp16+compile": ("fp16", True),
}


def synthetic_folders(root: Path, size: int, n: int = 8, names: tuple[str, str] = ("A", "B")) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for domain in names:
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size + 30, size + 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root / names[0], root / names[1]


def run_training(args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cyclestyle.config import load_config
    from cyclestyle.training import train

    precision, compile_ = MODES[args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        a, b = synthetic_folders(Path(tmp), args.size)
        # steps 1..warmup warm up, step warmup+1 has its FLOPs counted (slower, not timed), the next `steps` are
        # timed, and profiled steps come last
        total = args.warmup + 1 + args.steps + args.profile
        overrides = [f"data.root_a={a}", f"data.root_b={b}", f"data.load_size={args.size + 30}",
                     f"data.crop_size={args.size}", f"data.num_workers={args.workers}",
                     f"model.generator={args.generator}", f"model.ngf={args.ngf}",
                     f"model.unet_max_mult={args.unet_max_mult}",
                     f"loss.style_ab={args.style}", "loss.vgg_weights=random", f"train.run_dir={tmp}/run",
                     f"train.steps={total}", "train.decay_steps=0", f"train.batch_size={args.batch}",
                     f"train.mixed_precision={precision}", f"train.compile={str(compile_).lower()}",
                     f"train.log_every={10**6}", f"train.image_every={10**6}", f"train.checkpoint_every={10**6}"]
        ended: list[float] = []  # ended[i]: step i + 1 done; resumed[i]: its bookkeeping below done too
        resumed: list[float] = []
        flops = FlopCounterMode(display=False)
        profiler = torch.profiler.profile() if args.profile else None

        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

        def on_step(step: int) -> None:
            sync()  # GPU steps are asynchronous: time the work, not its queueing
            ended.append(time.perf_counter())
            if step == args.warmup:
                flops.__enter__()
            elif step == args.warmup + 1:
                flops.__exit__(None, None, None)
            elif profiler is not None and step == args.warmup + 1 + args.steps:
                profiler.__enter__()
            elif profiler is not None and step == total:
                profiler.__exit__(None, None, None)
            resumed.append(time.perf_counter())  # none of the bookkeeping is timed

        start = time.perf_counter()
        train(load_config(None, overrides), on_step=on_step)
    # the timed steps are warmup+2 .. warmup+1+steps (step s ended at ended[s - 1])
    times = [ended[s - 1] - resumed[s - 2] for s in range(args.warmup + 2, args.warmup + 2 + args.steps)]
    result = {"first_step_s": ended[0] - start, "median_s": statistics.median(times), "min_s": min(times),
              "max_s": max(times), "timed_steps": len(times), "flops": flops.get_total_flops()}
    if profiler is not None:
        events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
        total_us = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        result["profile"] = [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / args.profile,
                              "pct": 100 * e.self_cpu_time_total / total_us, "calls_per_step": e.count / args.profile}
                             for e in top]
        # the conversions the speed issue counts (dtype casts, layout reorders): every one is an aten::copy_
        copies = [e for e in events if e.key == "aten::copy_"]
        result["copies"] = {"calls_per_step": sum(e.count for e in copies) / args.profile,
                            "ms_per_step": sum(e.self_cpu_time_total for e in copies) / 1e3 / args.profile}
    return result


def run_translation(args) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cyclestyle.config import ModelConfig
    from cyclestyle.nets import build_generator
    from cyclestyle.translate import Translator

    precision = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "auto": "auto"}[MODES[args.mode][0]]
    model = ModelConfig(generator=args.generator, ngf=args.ngf, unet_max_mult=args.unet_max_mult)
    net = build_generator(model)
    if MODES[args.mode][1]:
        net = torch.compile(net)
    t = Translator(net, 4, args.device, precision)
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    t.translate_tensor(x)
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        t.translate_tensor(x)
        sync()
        times.append(time.perf_counter() - start)
    flops = FlopCounterMode(display=False)
    with flops:
        Translator(build_generator(model), 4, "cpu", "fp32").translate_tensor(x)
    return {"first_step_s": first, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "flops": flops.get_total_flops()}


def measured_peak(dtype_name: str, device: str, reps: int = 5) -> float:
    """The best FLOP/s of a large matmul and a large 3x3 convolution (oneDNN's conv kernels can beat
    its sgemm on CPUs) in this precision: the practical peak of this machine for this workload."""
    import torch
    import torch.nn.functional as F

    from cyclestyle.devices import native_bf16

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # no fp16 units on CPU
    # emulated bf16 (a CPU without avx512_bf16 or AMX) runs at ~1 GFLOP/s: a 4096^2 matmul would take minutes
    emulated = dtype == torch.bfloat16 and not native_bf16(torch.device(device))
    n, side, reps = (512, 16, 1) if emulated else (4096, 64, reps)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(1, 256, side, side, device=device, dtype=dtype)
    w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype)
    cases = [(lambda: a @ b, 2 * n**3), (lambda: F.conv2d(x, w, padding=1), 2 * 256 * 256 * 9 * side * side)]
    best = 0.0
    for fn, flops in cases:
        fn()
        for _ in range(reps):
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device != "cpu":
                torch.cuda.synchronize()
            best = max(best, flops / (time.perf_counter() - start))
    return best


def resolved_precision(mode: str, device: str) -> str:
    """fp32 | bf16 | fp16: what a mode computes in on this machine (fp16 on a CPU runs fp32 kernels)."""
    from cyclestyle.devices import resolve_precision

    precision = resolve_precision(MODES[mode][0], cpu=device == "cpu")
    return "fp32" if precision == "no" or (precision == "fp16" and device == "cpu") else precision


def run_reference(args) -> dict:
    """Time the reference implementation's ``train.py --model cycle_gan`` (ResNet-9, 70x70 PatchGAN, LSGAN,
    cycle + identity, batch ``--batch``) for one epoch of warm-up + timed iterations on synthetic images,
    with its own per-iteration timer (the ``time:`` of the lines it prints with ``--print_freq 1``)."""
    import re

    root = Path(args.reference)
    options = "".join((root / "options" / f).read_text() for f in ("base_options.py", "train_options.py")
                      if (root / "options" / f).exists())
    if not (root / "train.py").exists() or not (root / "models" / "cycle_gan_model.py").exists():
        raise SystemExit(f"--reference {root}: not a checkout of junyanz/pytorch-CycleGAN-and-pix2pix "
                         "(no train.py / models/cycle_gan_model.py)")

    def flag(*names: str) -> str:  # the option's name in this version of the reference
        return next((n for n in names if f"'{n}'" in options or f'"{n}"' in options), names[0])

    n = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_folders(Path(tmp) / "data", args.size, n * args.batch, names=("trainA", "trainB"))
        epochs = ["--n_epochs", "1", "--n_epochs_decay", "0"] if flag("--n_epochs", "--niter") == "--n_epochs" \
            else ["--niter", "1", "--niter_decay", "0"]
        cmd = [args.reference_python, "train.py", "--dataroot", str(Path(tmp) / "data"), "--name", "bench",
               "--model", "cycle_gan", "--gpu_ids", "0" if args.device.startswith("cuda") else "-1",
               "--display_id", "-1", "--no_html", *epochs, "--print_freq", "1",
               flag("--batch_size", "--batchSize"), str(args.batch), flag("--load_size", "--loadSize"),
               str(args.size + 30), flag("--crop_size", "--fineSize"), str(args.size),
               flag("--num_threads", "--nThreads"), str(args.workers), "--checkpoints_dir", str(Path(tmp) / "ckpt")]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"the reference's train.py failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    per_image = [float(t) for t in re.findall(r"time: ([0-9.]+)", done.stdout)]
    times = [t * args.batch for t in per_image[args.warmup:]]  # it prints seconds per image
    if not times:
        raise SystemExit(f"no 'time:' lines in the reference's output:\n{done.stdout[-2000:]}")
    return {"what": "train", "mode": "reference (fp32)", "first_step_s": per_image[0] * args.batch,
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "flops": None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "wall_s": wall}


def main() -> None:
    from cyclestyle.config import ModelConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed steps (and translation batches)")
    p.add_argument("--modes", nargs="+", default=["fp32", "default", "default+compile"], choices=list(MODES),
                   help="default: what `cyclestyle train` / `translate` do with no speed options (bf16 where the "
                        "CPU or GPU computes it natively, else fp32)")
    p.add_argument("--reference", default=None, metavar="CHECKOUT",
                   help="also time the reference implementation's train.py (a checkout of "
                        "junyanz/pytorch-CycleGAN-and-pix2pix) on the same synthetic images: its ResNet-9 CycleGAN")
    p.add_argument("--reference-python", default=sys.executable,
                   help="the Python to run the reference with (it needs torch, torchvision and dominate)")
    p.add_argument("--generator", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--unet-max-mult", type=int, default=ModelConfig().unet_max_mult,
                   help="model.unet_max_mult (U-Net generators)")
    p.add_argument("--style", type=float, default=0.0, help="style loss weight (random VGG); 0 = reference loss set")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu | cuda (translation rows; training follows accelerate)")
    p.add_argument("--no-translate", action="store_true")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timed steps, profile N more training steps and print the ops taking the most "
                        "CPU time (torch.profiler, self time)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", choices=("train", "translate"), help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        p.error(f"--warmup and --steps must be at least 1 (got {args.warmup} and {args.steps})")
    if args.child:
        result = (run_training if args.child == "train" else run_translation)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        try:
            import torch

            if torch.cuda.is_available():
                result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception:
            pass
        print("RESULT " + json.dumps(result))
        return

    import torch

    from cyclestyle.devices import cpu_description, describe_cpu

    device_name = torch.cuda.get_device_name() if args.device != "cpu" else describe_cpu()
    precisions = {mode: resolved_precision(mode, args.device) for mode in args.modes}
    peaks = {name: measured_peak(name, args.device) for name in sorted({"fp32", *precisions.values()})}
    rows = []
    if args.reference:
        rows.append(run_reference(args))
    for child in ("train",) + (() if args.no_translate else ("translate",)):
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", child, "--mode", mode] + sys.argv[1:]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                print(f"{child} {mode} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            rows.append({"what": child, "mode": mode, **json.loads(line[-1][7:])})
    base = {r["what"]: r["median_s"] for r in rows if r["mode"] == "fp32"}
    if args.reference:  # the reference's FLOPs are those of the same networks
        same = args.generator == "resnet_9blocks" and args.ngf == 64 and args.style == 0
        rows[0]["flops"] = next((r["flops"] for r in rows[1:] if r["what"] == "train" and same), float("nan"))
    print(f"\n{device_name}; torch {torch.__version__}; {args.generator} ngf {args.ngf}, {args.size}x{args.size}, "
          f"batch {args.batch}; measured peak " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items()))
    gpu = any("peak_gpu_mb" in r for r in rows)
    print("| what | mode | median s/iter (min-max) | img/s | first iter s | peak RSS MB | "
          + ("peak GPU MB | " if gpu else "") + "GFLOP/iter | TFLOP/s | % of peak | vs fp32 |"
          + (" vs reference |" if args.reference else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "") + ("---|" if args.reference else ""))
    reference_s = rows[0]["median_s"] if args.reference else None
    for r in rows:
        achieved = r["flops"] / r["median_s"]
        peak = peaks[precisions.get(r["mode"], "fp32")]
        ratio = base.get(r["what"], float("nan")) / r["median_s"]
        r.update(tflops=achieved / 1e12, pct_peak=100 * achieved / peak, vs_fp32=ratio,
                 images_per_s=args.batch / r["median_s"])
        mode = r["mode"] + (f" ({precisions[r['mode']]})" if r["mode"].startswith("default") else "")
        print(f"| {r['what']} | {mode} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) | "
              f"{r['images_per_s']:.2f} | {r['first_step_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              + (f"{r.get('peak_gpu_mb', float('nan')):.0f} | " if gpu else "") + f"{r['flops'] / 1e9:.0f} | "
              f"{r['tflops']:.3f} | {r['pct_peak']:.1f} | {ratio:.2f}x |"
              + (f" {reference_s / r['median_s']:.2f}x |" if reference_s and r["what"] == "train" else
                 (" |" if reference_s else "")))
    for r in rows:
        if r.get("profile"):
            c = r["copies"]
            print(f"\nprofile, {r['what']} {r['mode']}: ops by self CPU time over {args.profile} step(s); "
                  f"aten::copy_ {c['calls_per_step']:.0f} calls/step, {c['ms_per_step']:.1f} ms/step")
            print("| op | ms/step | % of profiled time | calls/step |\n|---|---|---|---|")
            for e in r["profile"]:
                print(f"| {e['op']} | {e['ms_per_step']:.1f} | {e['pct']:.1f} | {e['calls_per_step']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "cpu": cpu_description(),
                                               "torch": torch.__version__, "peaks": peaks, "args": vars(args),
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
