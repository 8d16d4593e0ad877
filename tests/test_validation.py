"""Validation during training: FID/KID logged every N steps, the `best` export, resume, errors.

The tiny random feature extractor of test_evaluation stands in for Inception in one process; the
2-process test (test_training.test_two_process_ddp_on_cpu) uses the real Inception architecture with
random weights, through the same code path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cyclestyle import checkpoint, evaluation
from cyclestyle.config import ConfigError
from cyclestyle.data import DataError
from cyclestyle.evaluation import EvaluationError
from cyclestyle.training import train
from cyclestyle.translate import Translator
from cyclestyle.validation import load_subset, to_uint8
from tests.conftest import write_images
from tests.test_evaluation import tiny_extractor
from tests.test_training import read_events


@pytest.fixture
def val_cfg(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "load_extractor", lambda weights=None, device="auto": tiny_extractor())
    va = write_images(tmp_path / "val_a", 5, seed=7)
    vb = write_images(tmp_path / "val_b", 4, seed=8, ext="jpg")

    def make(*extra, run="run"):
        return tiny_cfg("validation.every=2", f"validation.root_a={va}", f"validation.root_b={vb}",
                        "validation.direction=both", *extra, run=run)

    return make


def recompute(export: Path, cfg, direction: str) -> tuple[float, float]:
    """FID and KID of an export on the validation subset, computed outside training, in one batch."""
    source, reference = ("root_a", "root_b") if direction == "a2b" else ("root_b", "root_a")
    translator = Translator.load(export, direction=direction, device="cpu", precision="fp32")
    images = load_subset(getattr(cfg.validation, source), cfg, "source")
    ex = tiny_extractor()
    generated = ex(to_uint8(translator.translate_tensor(images)))
    real = ex(to_uint8(load_subset(getattr(cfg.validation, reference), cfg, "reference")))
    mu1, s1 = evaluation.statistics(generated)
    mu2, s2 = evaluation.statistics(real)
    return evaluation.frechet_distance(mu1, s1, mu2, s2), evaluation.kid(generated, real)["kid_mean"]


def test_scores_logged_every_n_steps_and_best_export_kept(val_cfg):
    cfg = val_cfg("train.steps=5", "train.decay_steps=0", "train.checkpoint_every=5")
    result = train(cfg)
    acc = read_events(result.run_dir / "tb")
    for tag in ("val/fid_a2b", "val/kid_a2b", "val/kid_std_a2b", "val/fid_b2a", "val/kid_b2a"):
        assert [e.step for e in acc.Scalars(tag)] == [2, 4, 5], tag  # every 2 steps and at the end
    fid = {d: {e.step: e.value for e in acc.Scalars(f"val/fid_{d}")} for d in ("a2b", "b2a")}
    assert all(np.isfinite(v) and v > 0 for d in fid for v in fid[d].values())

    # The last validation scored the final generators: the same numbers from the last export, outside training.
    for d in ("a2b", "b2a"):
        fid_now, kid_now = recompute(result.generators_file, cfg, d)
        assert fid[d][5] == pytest.approx(fid_now, rel=1e-4)
        assert acc.Scalars(f"val/kid_{d}")[-1].value == pytest.approx(kid_now, rel=1e-3, abs=1e-6)

    # best.safetensors: the step with the lowest mean FID over both directions, with its scores.
    mean = {s: (fid["a2b"][s] + fid["b2a"][s]) / 2 for s in (2, 4, 5)}
    best_step = min(mean, key=mean.get)
    best = result.run_dir / "generators" / "best.safetensors"
    _, meta = checkpoint.read_generators(best)
    assert int(meta["step"]) == best_step
    assert meta["validation"]["metric"] == "fid"
    assert meta["validation"]["score"] == pytest.approx(mean[best_step], rel=1e-5)
    assert meta["validation"]["fid_a2b"] == pytest.approx(recompute(best, cfg, "a2b")[0], rel=1e-4)
    shared = torch.load(result.checkpoint / "shared_state.pt", weights_only=True)
    assert shared["validation_best"]["step"] == best_step


def test_resumed_run_keeps_the_best_and_logs_the_same_scores(val_cfg):
    extra = ("train.steps=4", "train.decay_steps=0", "validation.metric=kid", "validation.direction=a2b")
    straight = train(val_cfg(*extra, run="straight"))
    train(val_cfg(*extra, run="split"), stop_at_step=2)
    resumed = train(val_cfg(*extra, run="split"), resume="latest")
    scores = [[(e.step, e.value) for e in read_events(r.run_dir / "tb").Scalars("val/kid_a2b")]
              for r in (straight, resumed)]
    assert scores[0] == scores[1] and [s for s, _ in scores[0]] == [2, 4]
    best = [torch.load(r.checkpoint / "shared_state.pt", weights_only=True)["validation_best"]
            for r in (straight, resumed)]
    assert best[0] == best[1] and best[0]["metric"] == "kid"
    metas = [checkpoint.read_generators(r.run_dir / "generators" / "best.safetensors")[1] for r in (straight, resumed)]
    assert metas[0]["step"] == metas[1]["step"] == str(best[0]["step"])
    assert metas[0]["validation"] == metas[1]["validation"]


def test_validation_off_writes_no_best_and_no_val_scalars(tiny_cfg):
    result = train(tiny_cfg("train.steps=2", "train.decay_steps=0"))
    assert not (result.run_dir / "generators" / "best.safetensors").exists()
    assert not [t for t in read_events(result.run_dir / "tb").Tags()["scalars"] if t.startswith("val/")]


def test_validation_mistakes_fail_before_training(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="'validation.root_a': is not set, but validation.every=5 needs it"):
        tiny_cfg("validation.every=5")
    with pytest.raises(ConfigError, match="'validation.metric': 'lpips' is not one of fid, kid"):
        tiny_cfg("validation.metric=lpips")
    good = write_images(tmp_path / "val", 3)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"validation.root_b folder not found: {missing}"):
        train(tiny_cfg("validation.every=2", f"validation.root_a={good}", f"validation.root_b={missing}", run="r1"))
    one = write_images(tmp_path / "one", 1)
    with pytest.raises(DataError, match="validation.root_a folder .* holds 1 readable image"):
        train(tiny_cfg("validation.every=2", f"validation.root_a={one}", f"validation.root_b={good}", run="r2"))
    weights = tmp_path / "inception.pth"
    with pytest.raises(EvaluationError, match=f"file not found: {weights}.*--inception-weights"):
        train(tiny_cfg("validation.every=2", f"validation.root_a={good}", f"validation.root_b={good}",
                       f"validation.inception_weights={weights}", run="r3"))
    assert not checkpoint.list_checkpoints(tmp_path / "r3")  # nothing trained, nothing saved
