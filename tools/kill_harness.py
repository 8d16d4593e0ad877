#!/usr/bin/env python
"""Crash-safety harness: SIGKILL a real training run at random moments, resume it, check nothing is lost.

A tiny run (random images, a small network, a checkpoint every few steps) is started with
``--resume latest`` as a subprocess and killed with SIGKILL after a random delay, over and over
(including while a checkpoint is being written); then it is run to completion. Checked:
- after every kill, each checkpoint folder on disk passes ``verify_checkpoint`` (complete, safe to load)
  and the newest checkpoint step never goes back;
- at least one kill lands after the first checkpoint (kills before it would test nothing but an empty folder);
- a SIGTERM then stops the run with a checkpoint and exit code 75 (its exit time is reported, not judged);
- the run completes, and its final generators are bit-identical to an uninterrupted run's (exact resume).

    python tools/kill_harness.py --kills 10
    python tools/kill_harness.py --kills 10 model.dropout=true train.ema=true loss.style_ab=1 loss.vgg_weights=random
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_folders(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for domain in ("A", "B"):
        (root / domain).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(root / domain / f"{i}.png")
    return root / "A", root / "B"


def command(run_dir: Path, a: Path, b: Path, steps: int, checkpoint_every: int, overrides: tuple[str, ...] = ()
            ) -> list[str]:
    return [sys.executable, "-m", "cyclestyle", "train", f"data.root_a={a}", f"data.root_b={b}",
            "data.load_size=36", "data.crop_size=32", "data.num_workers=0", "model.generator=resnet_6blocks",
            "model.ngf=8", "model.ndf=8", "loss.style_ab=0", "train.cpu=true", f"train.run_dir={run_dir}",
            f"train.steps={steps}", f"train.decay_steps={steps // 2}", "train.log_every=1", "train.image_every=1000",
            f"train.checkpoint_every={checkpoint_every}", "train.keep_checkpoints=2", "train.pool_size=4",
            *overrides, "--resume", "latest"]


def last_logged_step(run_dir: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    try:
        acc.Reload()
        return max(e.step for e in acc.Scalars("loss/gen_total"))
    except Exception:
        return 0


def wait_for_training(proc: subprocess.Popen, run: Path, writers: int) -> None:
    # The delay counts from the moment training starts (a new tensorboard event file appears), not from the
    # launch: start-up (imports, model build) takes 3-8 s depending on the machine.
    deadline = time.time() + 120
    while len(list((run / "tb").glob("events.*"))) == writers and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)


def run_harness(workdir: Path, kills: int = 10, steps: int | None = None, checkpoint_every: int = 3,
                min_delay: float = 0.2, max_delay: float = 3.0, seed: int = 0, overrides: tuple[str, ...] = ()
                ) -> dict:
    """Kill a run ``kills`` times, each ``min_delay``..``max_delay`` s after its training loop started, then
    stop it once with SIGTERM, then let it finish. ``overrides``: config keys for both runs."""
    steps = steps or 60 * kills + 60  # enough that the run outlives the kills (~30 tiny steps/s here)
    from safetensors.torch import load_file

    from cyclestyle import checkpoint

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    a, b = make_folders(workdir / "data")
    cmd = lambda run_dir: command(run_dir, a, b, steps, checkpoint_every, tuple(overrides))  # noqa: E731
    subprocess.run(cmd(workdir / "straight"), check=True, env=env, capture_output=True)
    run = workdir / "killed"
    rng = random.Random(seed)
    report = {"kills": 0, "kills_after_first_checkpoint": 0, "checkpoints_verified": 0, "max_steps_lost": 0,
              "step_went_back": False}
    latest_seen = 0
    while report["kills"] < kills:
        writers = len(list((run / "tb").glob("events.*")))
        proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_training(proc, run, writers)
        time.sleep(rng.uniform(min_delay, max_delay))
        if proc.poll() is not None:  # finished before the kill: nothing left to kill
            break
        had_checkpoint = bool(checkpoint.list_checkpoints(run))
        proc.kill()
        proc.wait()
        report["kills"] += 1
        report["kills_after_first_checkpoint"] += had_checkpoint
        found = checkpoint.list_checkpoints(run)
        for _, folder in found:
            checkpoint.verify_checkpoint(folder)
            report["checkpoints_verified"] += 1
        latest = found[-1][0] if found else 0
        report["step_went_back"] |= latest < latest_seen
        latest_seen = max(latest_seen, latest)
        report["max_steps_lost"] = max(report["max_steps_lost"], last_logged_step(run) - latest)
    # SIGTERM (what a scheduler sends before its SIGKILL): finish the step, save, exit with EXIT_PREEMPTED
    writers = len(list((run / "tb").glob("events.*")))
    proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_training(proc, run, writers)
    time.sleep(rng.uniform(min_delay, max_delay))
    sent = time.perf_counter()
    proc.terminate()
    code = proc.wait()
    report["sigterm_exit_seconds"] = round(time.perf_counter() - sent, 2)
    report["sigterm_exit_code"] = code  # 75 (EX_TEMPFAIL); 0 if the run had already finished
    final = subprocess.run(cmd(run), env=env, capture_output=True, text=True)
    report["completed"] = final.returncode == 0 and checkpoint.list_checkpoints(run)[-1][0] == steps
    straight = load_file(str(workdir / "straight" / "generators" / "last.safetensors"))
    resumed = load_file(str(run / "generators" / "last.safetensors"))
    report["identical_to_uninterrupted"] = straight.keys() == resumed.keys() and all(
        (straight[k] == resumed[k]).all().item() for k in straight)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="default: 60 per kill + 60")
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the runs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_harness(Path(tmp), args.kills, args.steps, args.checkpoint_every, seed=args.seed,
                             overrides=tuple(args.overrides))
    print("| kills survived (after the 1st checkpoint) | checkpoints verified | max steps lost per kill | "
          "step went back | SIGTERM exit | completed | identical to uninterrupted |\n|---|---|---|---|---|---|---|")
    print(f"| {report['kills']} ({report['kills_after_first_checkpoint']}) | {report['checkpoints_verified']} | "
          f"{report['max_steps_lost']} | {report['step_went_back']} | code {report['sigterm_exit_code']} in "
          f"{report['sigterm_exit_seconds']} s | {report['completed']} | {report['identical_to_uninterrupted']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    ok = (report["completed"] and report["identical_to_uninterrupted"] and not report["step_went_back"]
          and report["kills_after_first_checkpoint"] > 0 and report["sigterm_exit_code"] == 75)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
