"""Shared fixtures: tiny real image folders and tiny configs (CPU, seconds per test)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cyclestyle.config import Config, load_config


@pytest.fixture(autouse=True)
def _reset_accelerate():
    """Each test builds its own Accelerator; accelerate keeps process-wide state between them."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_images(folder, n, size=(40, 36), seed=0, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = size[0] + 4 * (i % 3), size[1] + 2 * (i % 2)  # mixed sizes, on purpose
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-40, 40, (h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"img_{i:02d}.{ext}")
    return folder


@pytest.fixture
def folders(tmp_path):
    """Domain A (6 png) and domain B (5 jpg, one in a sub-folder), unpaired."""
    a = write_images(tmp_path / "A", 6, seed=1)
    b = write_images(tmp_path / "B", 4, seed=2, ext="jpg")
    write_images(tmp_path / "B" / "nested", 1, seed=3, ext="jpg")
    return a, b


def tiny_overrides(folders, run_dir, *extra) -> list[str]:
    a, b = folders
    return [f"data.root_a={a}", f"data.root_b={b}", "data.load_size=36", "data.crop_size=32",
            "data.num_workers=0", "model.generator=resnet_6blocks", "model.ngf=8", "model.ndf=8",
            "loss.style_ab=0", f"train.run_dir={run_dir}", "train.steps=4", "train.decay_steps=2",
            "train.log_every=1", "train.image_every=2", "train.checkpoint_every=2", "train.cpu=true", *extra]


@pytest.fixture
def tiny_cfg(folders, tmp_path):
    def make(*extra, run="run") -> Config:
        return load_config(None, tiny_overrides(folders, tmp_path / run, *extra))

    return make
