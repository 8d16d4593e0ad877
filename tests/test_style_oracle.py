"""The oracle-code diagnostic (tools/style_oracle.py): the codes it trains with are the painters' own, and its
errors. Run as a subprocess, as users run it: its patches never touch the test process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _oracle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "style_oracle.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_trains_with_each_painters_code_and_scores_with_them(tmp_path):
    pytest.importorskip("skimage", reason="the quality benchmark needs scikit-image (dev extra)")
    from safetensors.torch import load_file

    from cyclestyle import quality_styles

    quality_styles.build(tmp_path / "data", size=32, n_train=6, n_test=2)
    steps = 3
    done = _oracle("--bench", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--steps", str(steps),
                   "model.generator=resnet_6blocks", "model.ngf=8", "model.ndf=8", "train.cpu=true",
                   "train.mixed_precision=no", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "oracle-seed0.json").read_text())
    assert "loss.lambda_code=0" in report["overrides"]
    assert set(report["painters"]) == {"colour", "oil", "ink"}
    assert report["painters"]["ink"]["wrong_painter"] == "colour"
    # every real B image the step encodes (its code for A->B, for the B->A->B cycle, for the mean) was found
    assert report["lookups"]["hits"] == 3 * steps
    # the stored mean codes are means of the oracle's codes: painter k's is sqrt(8) e_k, domain A's sqrt(8) e_7
    # (a learned encoder's codes would spread over all eight numbers)
    weights = load_file(tmp_path / "out" / "oracle" / "generators" / "last.safetensors")
    mean_b, mean_a = weights["gen_ab.mean_code"], weights["gen_ba.mean_code"]
    assert torch.all(mean_b[3:] == 0) and torch.all(mean_b[:3] >= 0)
    assert float(mean_b.sum()) == pytest.approx(8 ** 0.5, rel=1e-5)
    assert torch.allclose(mean_a, torch.eye(8)[7] * 8 ** 0.5)


def test_a_missing_benchmark_the_hue_jitter_and_vgg_codes_are_refused_by_name(tmp_path):
    done = _oracle("--bench", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'nothing' / 'styles.json'} not found: build the benchmark first" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "styles.json").write_text('{"painters": ["colour", "oil", "ink"], "size": 128}')
    done = _oracle("--bench", str(tmp_path / "bench"), "--out", str(tmp_path / "out"), "loss.code_hue_jitter=true",
                   cwd=tmp_path)
    assert done.returncode == 2 and "loss.code_hue_jitter changes the images the encoder reads" in done.stderr
    assert "Traceback" not in done.stderr
    done = _oracle("--bench", str(tmp_path / "bench"), "--out", str(tmp_path / "out"), "model.style_code=vgg",
                   cwd=tmp_path)
    assert done.returncode == 2 and "model.style_code=vgg: the oracle replaces a learned encoder's" in done.stderr
