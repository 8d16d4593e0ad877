"""Crash, kill, preemption and fault safety (issue: never lose a training run)."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclestyle import checkpoint, losses
from cyclestyle.training import EXIT_PREEMPTED, train
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    spec = importlib.util.spec_from_file_location("kill_harness", ROOT / "tools" / "kill_harness.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    report = harness.run_harness(tmp_path, kills=2, seed=1)
    assert report["kills"] == 2
    assert report["kills_after_first_checkpoint"] >= 1  # not only kills of a run that had nothing to lose
    assert report["sigterm_exit_code"] == EXIT_PREEMPTED
    assert report["checkpoints_verified"] >= 3
    assert not report["step_went_back"]
    assert report["completed"]
    assert report["identical_to_uninterrupted"]


def test_sigterm_saves_a_checkpoint_and_exits_with_its_code(folders, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "cyclestyle", "train", *tiny_overrides(folders, run), "train.steps=100000",
            "train.decay_steps=0", "train.checkpoint_every=1000", "train.log_every=5"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "tb").is_dir() and time.time() < deadline:  # training has started
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)  # its exit time is reported by tools/kill_harness.py, not judged here
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "SIGTERM received" in err and "--resume latest" in err
    found = checkpoint.list_checkpoints(run)
    assert len(found) == 1 and 0 < found[0][0] < 1000  # saved where it stopped, not at a schedule step
    checkpoint.verify_checkpoint(found[0][1])


def test_malicious_pickle_in_a_checkpoint_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0")
    train(cfg)
    folder = checkpoint.list_checkpoints(cfg.train.run_dir)[-1][1]
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state": Evil()}, folder / "random_states_0.pkl")
    with pytest.raises(checkpoint.CheckpointError, match="random_states_0.pkl references code.*system"):
        train(tiny_cfg("train.steps=4", "train.decay_steps=0"), resume="latest")
    assert not marker.exists()


def test_damaged_checkpoint_file_is_named(tiny_cfg):
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0")
    train(cfg)
    folder = checkpoint.list_checkpoints(cfg.train.run_dir)[-1][1]
    (folder / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors is damaged"):
        checkpoint.verify_checkpoint(folder)


def test_nan_loss_stops_without_overwriting_the_good_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0")
    train(cfg)
    good = checkpoint.list_checkpoints(cfg.train.run_dir)
    monkeypatch.setattr(losses, "l1", lambda a, b: (a - b).abs().mean() * float("nan"))  # fault injection
    with pytest.raises(FloatingPointError, match="non-finite loss.*step-0000002"):
        train(tiny_cfg("train.steps=4", "train.decay_steps=0"), resume="latest")
    assert checkpoint.list_checkpoints(cfg.train.run_dir) == good


def test_failed_checkpoint_write_keeps_the_previous_one(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0")
    train(cfg)
    good = checkpoint.list_checkpoints(cfg.train.run_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)  # fault injection at the write
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*step-0000002.*is intact"):
        train(tiny_cfg("train.steps=4", "train.decay_steps=0"), resume="latest")
    assert checkpoint.list_checkpoints(cfg.train.run_dir) == good
    assert not list(checkpoint.checkpoints_dir(cfg.train.run_dir).glob(".step-*"))  # no half-written leftovers
    checkpoint.prune_checkpoints(cfg.train.run_dir, keep=0)  # pruning never deletes the only good one
    assert checkpoint.list_checkpoints(cfg.train.run_dir) == good


def test_same_seed_same_losses(tiny_cfg):
    first = train(tiny_cfg("train.steps=3", "train.decay_steps=0", run="one"))
    second = train(tiny_cfg("train.steps=3", "train.decay_steps=0", run="two"))
    assert first.losses == second.losses and first.losses


def test_hostile_corpus_in_training_data(hostile_corpus):
    import warnings

    from cyclestyle.data import UnpairedDataset, build_transform, scan_folder

    root, good, header_bad, decode_bad = hostile_corpus
    with pytest.warns(UserWarning, match=f"skipped {len(header_bad)} unreadable file"):
        scan = scan_folder(root, "data.root_a")
    assert {p.name for p in scan.files} == good | decode_bad
    assert {p.name for p, _ in scan.skipped} == header_bad
    reasons = dict((p.name, why) for p, why in scan.skipped)
    assert "decompression bomb" in reasons["bomb.png"] and reasons["zero.jpg"] == "empty file"
    ds = UnpairedDataset(scan.files, scan.files, build_transform(32, 36), draft_size=36)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [ds[(i, i, i)] for i in range(len(scan.files))]
    assert all(s["a"].shape == (3, 32, 32) and torch.isfinite(s["a"]).all() for s in samples)
    assert {name for name in decode_bad if any(name in str(w.message) for w in caught)} == decode_bad


def test_hostile_corpus_in_translate(hostile_corpus, tmp_path):
    from cyclestyle.translate import Translator
    from tests.test_translate import make_export

    root, good, header_bad, decode_bad = hostile_corpus
    path, _ = make_export(tmp_path / "g.safetensors")
    t = Translator.load(path, device="cpu")
    with pytest.warns(UserWarning):
        summary = t.translate_folder(root, tmp_path / "out", batch_size=4)
    assert summary.n_done == len(good)
    assert {p.name for p, _ in summary.skipped} == header_bad | decode_bad
    bomb = next(why for p, why in summary.skipped if p.name == "bomb.png")
    assert "--tile" in bomb
    from PIL import Image

    assert Image.open(tmp_path / "out" / "one_pixel.png").size == (1, 1)
    assert Image.open(tmp_path / "out" / "rotated.png").size == (48, 64)
    assert (tmp_path / "out" / "folder.jpg" / "inside.png").is_file()
    with pytest.warns(UserWarning):
        tiled = t.translate_folder(root, tmp_path / "tiled", tile=32, overlap=8)
    assert tiled.n_done == len(good) and "bomb.png" in {p.name for p, _ in tiled.skipped}


def test_sigterm_to_one_ddp_rank_stops_all_ranks_with_one_checkpoint(folders, tmp_path):
    """2 processes (gloo): only rank 1 gets SIGTERM; all ranks agree to stop at the same step and save once."""
    import psutil

    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "cyclestyle", "train", *tiny_overrides(folders, run), "train.steps=100000", "train.decay_steps=0",
           "train.checkpoint_every=1000", "train.log_every=5"]
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not (run / "tb").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    children = psutil.Process(launcher.pid).children(recursive=True)
    workers = [p for p in children if "cyclestyle" in " ".join(p.cmdline())]
    assert len(workers) == 2
    rank1 = next(p for p in workers if p.environ().get("RANK") == "1")
    rank1.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=90)
    found = checkpoint.list_checkpoints(run)
    assert len(found) == 1 and 0 < found[0][0] < 1000, err[-2000:]
    names = {p.name for p in found[0][1].iterdir()}
    assert {"rank_state_0.pt", "rank_state_1.pt", "random_states_0.pkl", "random_states_1.pkl"} <= names
    checkpoint.verify_checkpoint(found[0][1])
    assert "stopped at step" in err
    # each rank exits with EXIT_PREEMPTED; torch's launcher reports that as its own failure (exit 1)
    assert launcher.returncode != 0 and f"exitcode  : {EXIT_PREEMPTED}" in err
