"""Exact resume in every configuration, and the resume policy (what a resumed run may change)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cyclestyle import checkpoint, config as config_lib, resume as resume_policy
from cyclestyle.config import ConfigError
from cyclestyle.training import train
from tests.test_training import read_events

pytestmark = pytest.mark.usefixtures("single_threaded_module")


def load_state_file(path: Path):
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix == ".json":
        state = json.loads(path.read_text())
        state.get("config", {}).get("train", {}).pop("run_dir", None)  # the two runs live in two folders
        return state
    return torch.load(path, map_location="cpu", weights_only=False)  # our own files, written by this test


def assert_same(a, b, where: str) -> None:
    """Recursive bit-exact equality of checkpoint contents: tensors and arrays by value, dtype and shape."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_checkpoints(folder_a: Path, folder_b: Path) -> list[str]:
    """Every file of two checkpoint folders holds the same state (weights, Adam moments, schedulers, pools, EMA,
    style targets, validation best, RNG states). Returns the file names compared."""
    names = sorted(p.name for p in folder_a.iterdir())
    assert names == sorted(p.name for p in folder_b.iterdir())
    for name in names:
        assert_same(load_state_file(folder_a / name), load_state_file(folder_b / name), name)
    return names


CONFIGS = {
    "dropout": ("model.dropout=true",),  # draws from torch's global RNG every step
    "pool_ema_style_mean": ("train.pool_size=2", "train.ema=true", "loss.style_ab=2", "loss.style_ba=1",
                            "loss.vgg_weights=random", "loss.style_target=mean", "model.spectral_norm=true"),
    # style codes: a per-image style target (style_target=batch), the codes' running mean, its count under EMA
    "style_codes_r1_hinge_ema": ("loss.style_ab=1", "loss.vgg_weights=random", "loss.style_target=batch",
                                 "loss.r1_gamma=1", "loss.gan_mode=hinge", "model.style_code=learned",
                                 "train.ema=true", "loss.code_hue_jitter=true", "loss.lambda_cycle_a=3"),
    # VGG codes: a frozen VGG inside each generator (saved, not trained), the mapping trained with FiLM at x3
    "style_codes_vgg": ("model.style_code=vgg", "loss.vgg_weights=random", "model.film_lr_mult=3"),
    "grad_accum_batch2_workers": ("train.grad_accum=2", "train.batch_size=2", "data.num_workers=2",
                                  "model.dropout=true"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_cfg, name):
    """4 steps straight vs 2 + resume + 2: every tensor of the final checkpoint is equal, and so are the
    last losses and the logged learning rates."""
    extra = (*CONFIGS[name], "train.checkpoint_every=2")
    straight = train(tiny_cfg(*extra, run="straight"))
    first = train(tiny_cfg(*extra, run="split"), stop_at_step=2)
    assert first.step == 2
    resumed = train(tiny_cfg(*extra, run="split"), resume="latest")
    assert resumed.step == 4 and resumed.checkpoint.name == "step-0000004"
    compared = assert_same_checkpoints(straight.checkpoint, resumed.checkpoint)
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "rank_state_0.pt",
            "shared_state.pt", "trainer_state.json"} <= set(compared)
    assert straight.losses == resumed.losses
    lr_a = read_events(straight.run_dir / "tb").Scalars("lr/gen")
    lr_b = read_events(resumed.run_dir / "tb").Scalars("lr/gen")
    assert [(e.step, e.value) for e in lr_a] == [(e.step, e.value) for e in lr_b]


def test_resume_applies_a_changed_lr_and_betas_and_logs_the_change(tiny_cfg, capsys, monkeypatch):
    train(tiny_cfg("train.steps=4", "train.decay_steps=0"), stop_at_step=2)
    used = []  # (lr, betas) of every optimizer step the resumed run takes (G and D alternate)
    adam_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        used.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"]))
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    resumed = train(tiny_cfg("train.steps=6", "train.decay_steps=2", "train.lr=1e-3", "train.beta1=0.9"),
                    resume="latest")
    assert resumed.step == 6
    # steps 3-6 with the new lr and schedule (decay over the last 2 of 6), from the first resumed step on
    assert used == [(pytest.approx(lr), (0.9, 0.999)) for lr in (1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4)]
    out = capsys.readouterr().out
    assert "resuming at step 2 with a changed config" in out
    assert "train.lr: 0.0002 -> 0.001" in out and "train.beta1: 0.5 -> 0.9" in out
    # the LR logged after each step: the old 2e-4 after steps 1-2, then the new schedule
    lrs = [(e.step, e.value) for e in read_events(resumed.run_dir / "tb").Scalars("lr/gen")]
    assert lrs == [(1, pytest.approx(2e-4)), (2, pytest.approx(2e-4)), (3, pytest.approx(1e-3)),
                   (4, pytest.approx(1e-3)), (5, pytest.approx(5e-4)), (6, 0.0)]
    optimizer = torch.load(resumed.checkpoint / "optimizer.bin", weights_only=True)
    assert [g["betas"] for g in optimizer["param_groups"]] == [(0.9, 0.999)]
    assert [g["initial_lr"] for g in optimizer["param_groups"]] == [1e-3]
    config_text = (resumed.run_dir / "config.yaml").read_text()
    assert "lr: 0.001" in config_text and "beta1: 0.9" in config_text  # the config in force now
    log = (resumed.run_dir / "config_changes.log").read_text()
    assert "resumed at step 2:" in log and "  train.lr: 0.0002 -> 0.001\n" in log and "train.steps: 4 -> 6" in log
    state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
    assert state["config"]["train"]["lr"] == 1e-3  # each checkpoint records the config it was trained with


@pytest.mark.parametrize("change, line", [
    (("model.ngf=16",), "model.ngf: 8 -> 16 (it sets the saved networks' shapes)"),
    (("data.load_size=40", "data.crop_size=36"), "data.crop_size: 32 -> 36 (it sets the saved image pools' shapes)"),
    (("loss.style_ab=1", "loss.vgg_weights=random"),
     "loss.style_ab: 0.0 -> 1.0 (it sets whether style targets are saved (the style loss on or off))"),
    (("train.pool_size=3",), "train.pool_size: 50 -> 3 (it sets the saved image pools)"),
    (("train.ema=true",), "train.ema: False -> True (it sets the saved EMA generators)"),
    (("train.batch_size=2",), "train.batch_size: 1 -> 2 (it sets the data stream's position"),
])
def test_resume_refuses_frozen_keys_with_one_line_each(tiny_cfg, change, line):
    train(tiny_cfg("train.steps=2", "train.decay_steps=0"))
    before = (Path(tiny_cfg().train.run_dir) / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        train(tiny_cfg("train.steps=4", "train.lr=1e-3", *change), resume="latest")
    message = str(err.value)
    assert message.startswith("cannot resume") and f"\n  {line}" in message
    assert "train.lr" not in message  # allowed changes are not listed among the refused ones
    assert (Path(tiny_cfg().train.run_dir) / "config.yaml").read_text() == before  # nothing rewritten


def test_fresh_start_over_a_run_is_refused_and_a_complete_run_trains_nothing(tiny_cfg):
    train(tiny_cfg("train.steps=2", "train.decay_steps=0"))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume latest"):
        train(tiny_cfg("train.steps=2", "train.decay_steps=0"))
    done = train(tiny_cfg("train.steps=2", "train.decay_steps=0", "train.lr=1e-3"), resume="latest")
    assert done.step == 2  # already complete: nothing to train, not an error


def test_a_damaged_trainer_state_is_named_not_a_traceback(tiny_cfg):
    train(tiny_cfg("train.steps=2", "train.decay_steps=0"))
    folder = checkpoint.list_checkpoints(tiny_cfg().train.run_dir)[-1][1]
    (folder / "trainer_state.json").write_text('{"step": 2, "conf')
    with pytest.raises(checkpoint.CheckpointError, match=r"step-0000002: trainer_state.json unreadable"):
        train(tiny_cfg("train.steps=4", "train.decay_steps=0"), resume="latest")


def test_a_run_saved_before_unet_max_mult_resumes_as_the_width_it_was_trained_with(tiny_cfg):
    """Configs saved before ``model.unet_max_mult`` existed were trained with 8 (the default then; it is 2 now):
    resuming one with today's default is refused naming the key, resuming it with 8 goes on."""
    saved = config_lib.to_dict(tiny_cfg("model.unet_max_mult=8"))
    del saved["model"]["unet_max_mult"]  # as the config of a checkpoint from before the key holds it
    refused, applied = resume_policy.compare(saved, tiny_cfg())
    assert refused == ["model.unet_max_mult: 8 -> 2 (it sets the saved networks' shapes)"] and applied == []
    assert resume_policy.compare(saved, tiny_cfg("model.unet_max_mult=8")) == ([], [])
