"""The ground-truth translation benchmark (cyclestyle/quality.py, cyclestyle/quality_check.py): training learns.

Unit checks of the benchmark's construction (unpaired splits from disjoint photo regions, exact ground
truth), of the metrics against closed forms and of the reports; and one end-to-end run: a short CPU training
on a small version of the benchmark must beat the identity baseline's PSNR by a stated margin.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cyclestyle import evaluation, quality
from cyclestyle.devices import describe_cpu

pytest.importorskip("skimage", reason="the quality benchmark needs scikit-image (dev extra)")

ROOT = Path(__file__).resolve().parents[1]
NAME_RE = re.compile(r"^(?P<source>[a-z_]+)-c(?P<cell>\d)_\d{3}\.png$")

# End-to-end budget. A U-Net generator learns the filter's colour grade far sooner than the ResNet ones,
# whose outputs are still noisy after a few thousand steps at 32-64 px (measured: resnet_6blocks ngf 16 at
# 32 px, 3000 steps, -2.0 dB vs identity), so the test trains a tiny unet_128 at 128 px.
E2E_STEPS = 1000
E2E_OVERRIDES = ["model.generator=unet_128", "model.ngf=8", "model.ndf=8", "loss.style_ab=0",
                 "data.num_workers=0", "train.cpu=true", "train.mixed_precision=no"]
# Measured with exactly this setting (128 px, 120 train images per domain, 16 test photos, 1000 steps):
# PSNR gain over identity +3.58 / +3.96 / +3.89 dB for seeds 0 / 1 / 2 (identity 17.16 dB, model 20.7-21.1 dB;
# about 50 s of training on 2 idle cores); required: 1.5 dB, about 40% of the smallest gain.
E2E_MARGIN_DB = 1.5

REPORT_FIELDS = {"name", "painter", "overrides", "config", "config_diff_vs_base", "seed", "steps", "steps_requested",
                 "stopped_by_time", "minutes", "mixed_precision", "model", "identity", "delta_psnr", "delta_ssim",
                 "fid", "notes", "train_seconds", "seconds_per_step", "seconds_per_step_median", "wall_seconds",
                 "run_dir", "translations", "final_losses", "benchmark", "machine", "timestamp",
                 "cyclestyle_version"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small benchmark: 128 px (unet_128's input multiple), 120 train images per domain, 16 test photos."""
    out = tmp_path_factory.mktemp("bench")
    manifest = quality.build_benchmark(out, size=128, seed=0, n_train=120, n_test=16)
    return out, manifest


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_splits_share_no_photo_region(bench):
    out, manifest = bench
    assert manifest["counts"] == {"trainA": 120, "trainB": 120, "testA": 16, "testA_painted": 16}
    regions = {}
    for split in ("trainA", "trainB", "testA"):
        ids = set()
        for name in _names(out / split):
            match = NAME_RE.match(name)
            assert match, name
            ids.add((match["source"], int(match["cell"])))
        regions[split] = ids
    assert not regions["trainA"] & regions["trainB"]
    assert not regions["testA"] & (regions["trainA"] | regions["trainB"])
    assert {s for s, _ in regions["testA"]} == set(quality.SOURCES)  # every photo contributes test regions

    # The recorded crop boxes: no pixel of one split's image lies in another split's image of the same photo.
    boxes = {}
    for item in manifest["images"]:
        boxes.setdefault((item["source"], item["split"]), []).append(item["box"])
    for source in quality.SOURCES:
        masks = {}
        for split in ("trainA", "trainB", "testA"):
            mask = np.zeros((2000, 2000), bool)
            for top, left, side in boxes.get((source, split), []):
                mask[top:top + side, left:left + side] = True
            masks[split] = mask
        assert not (masks["trainA"] & masks["trainB"]).any(), source
        assert not (masks["testA"] & (masks["trainA"] | masks["trainB"])).any(), source


def test_truth_is_the_filter_of_the_test_photo(bench):
    out, _ = bench
    names = _names(out / "testA")
    assert names == _names(out / "testA_painted")
    for name in names:
        photo = quality.read_rgb(out / "testA" / name)
        assert photo.shape == (128, 128, 3)
        np.testing.assert_array_equal(quality.paint(photo), quality.read_rgb(out / "testA_painted" / name))
    # the filter is the sample data's one (shared, not a copy)
    spec = importlib.util.spec_from_file_location("msd_check", ROOT / "tools" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    photo = quality.read_rgb(out / "testA" / names[0])
    np.testing.assert_array_equal(module.paint(photo), quality.paint(photo))


def test_build_is_reproducible_and_reuse_checks_parameters(bench, tmp_path):
    out, manifest = bench
    again = quality.build_benchmark(tmp_path / "b", size=128, seed=0, n_train=120, n_test=16)
    assert again["images"] == manifest["images"]
    name = _names(out / "trainB")[3]
    np.testing.assert_array_equal(quality.read_rgb(out / "trainB" / name),
                                  quality.read_rgb(tmp_path / "b" / "trainB" / name))
    assert quality.load_or_build(out, 128, 0, 120, 16, reuse=True)["images"] == manifest["images"]
    with pytest.raises(quality.QualityError, match=r"size=128 \(asked 64\)"):
        quality.load_or_build(out, 64, 0, 120, 16, reuse=True)


def test_psnr_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.9, (16, 16, 3))
    assert quality.psnr(x, x, data_range=1.0) == float("inf")
    assert quality.psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0)  # MSE 0.01 on [0, 1]
    a = rng.integers(0, 246, (8, 8, 3)).astype(np.uint8)
    assert quality.psnr(a, a + 10) == pytest.approx(10 * np.log10(255 ** 2 / 100))  # 28.13 dB
    with pytest.raises(ValueError, match="shapes"):
        quality.psnr(a, a[:4])
    assert quality.ssim(a, a) == pytest.approx(1.0)
    figures = quality.score([(a, a + 10), (a, a + 10)])
    assert figures["n"] == 2 and figures["psnr_std"] == pytest.approx(0.0)


def test_fid_missing_weights_is_na_not_random(monkeypatch, tmp_path):
    def missing(weights=None, device="auto"):
        raise evaluation.EvaluationError("weights file not found")

    monkeypatch.delenv(evaluation.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(evaluation, "load_extractor", missing)
    report = quality.fid_figures(tmp_path, tmp_path)
    assert report["fid"] is None and report["note"].startswith("n/a (no Inception weights: put ")
    with pytest.raises(evaluation.EvaluationError):  # weights named explicitly must load
        quality.fid_figures(tmp_path, tmp_path, inception_weights=str(tmp_path / "missing.pth"))


def test_fid_random_inception_is_labelled(bench, monkeypatch):
    from tests.test_evaluation import tiny_extractor

    out, _ = bench
    asked = []
    monkeypatch.setattr(evaluation, "load_extractor", lambda weights=None, device="auto": asked.append(weights)
                        or tiny_extractor())
    report = quality.fid_figures(out / "testA", out / "testA_painted", random_inception=True)
    assert asked == ["random"] and "NOT FID" in report["label"] and report["fid"] > 0 and report["n"] == 16


def test_recipe_parsing_and_table():
    from cyclestyle import quality_check as tool

    assert tool.parse_recipe("lsgan=") == ("lsgan", [])
    assert tool.parse_recipe("ema=train.ema=true, train.ema_decay=0.99") == ("ema", ["train.ema=true",
                                                                                     "train.ema_decay=0.99"])
    with pytest.raises(Exception, match="key=value"):
        tool.parse_recipe("bad=loss.gan_mode")

    def report(seed, psnr):
        return {"seed": seed, "steps": 10, "model": {"psnr": psnr, "ssim": 0.5, "grid_db": 1.0},
                "identity": {"psnr": 17.0, "ssim": 0.55, "grid_db": 0.0},
                "delta_psnr": psnr - 17.0, "seconds_per_step_median": 0.1, "fid": {"fid": None, "note": "n/a"}}

    table = quality.format_comparison({"a": [report(0, 20.0), report(1, 22.0)], "b": []}, {"a": [], "b": ["x=1"]})
    summary, detail = table.split("\n\npainter colour:\n\n")
    lines = summary.splitlines()
    assert lines[0] == "| recipe | overrides | colour Δ dB | mean Δ dB | SSIM (mean) | grid (dB) |"
    assert lines[2] == "| a | (none) | +4.00 | +4.00 ± 1.41 | 0.5000 | +1.00 |"
    assert lines[3].startswith("| b | x=1 | failed |")
    lines = detail.splitlines()
    assert lines[0].startswith("| recipe |") and "identity" in lines[2]
    assert lines[3].startswith(
        "| a | (none) | 0 1 | 10 | 21.00 ± 1.41 | 0.5000 ± 0.0000 | +4.00 ± 1.41 | +1.00 ± 0.00 |")
    assert "failed" in lines[4]


def test_summary_means_over_painters_and_seeds():
    def report(painter, seed, delta):
        return {"painter": painter, "seed": seed, "steps": 10, "delta_psnr": delta, "seconds_per_step_median": 0.1,
                "model": {"psnr": 17.0 + delta, "ssim": 0.5, "grid_db": 0.0}, "fid": {"fid": None},
                "identity": {"psnr": 17.0, "ssim": 0.55, "grid_db": 0.0}}

    rows = quality.summary_rows({"r": [report("colour", 0, 4.0), report("oil", 0, 2.0), report("colour", 1, 6.0),
                                       report("oil", 1, 2.0)]})["r"]
    assert rows["per_painter"] == {"colour": 5.0, "oil": 2.0}
    assert rows["mean"] == pytest.approx(3.5)
    assert rows["seed_std"] == pytest.approx(np.std([3.0, 4.0], ddof=1))  # per-seed means over painters
    groups = {"r": [report("colour", 0, 4.0), report("oil", 0, 2.0)], "s": [report("oil", 0, 1.0)]}
    table = quality.format_comparison(groups, {"r": [], "s": []})
    assert "| s | (none) | n/a | +1.00 | n/a (not every painter) |" in table


def test_grid_energy_sees_a_stride_pattern():
    rng = np.random.default_rng(0)
    truth = rng.integers(60, 200, (64, 64, 3)).astype(np.float64)
    truth = (truth + np.roll(truth, 1, 0) + np.roll(truth, 1, 1)) / 3  # some texture, no grid
    checker = 8.0 * ((np.indices((64, 64)).sum(0) % 2) * 2 - 1)[..., None]  # period-2 checkerboard
    assert quality.grid_energy_db([(truth, truth)]) == pytest.approx(0.0)
    assert quality.grid_energy_db([(truth + checker, truth)]) > 6.0
    noise = rng.normal(0, 8.0, truth.shape)  # the same energy spread over every frequency barely moves it
    assert quality.grid_energy_db([(truth + noise, truth)]) < 3.0


def test_painters_change_what_they_are_meant_to(bench):
    """oil removes fine texture and keeps borders, ink turns most of the photo into paper; all deterministic."""
    from cyclestyle import painters

    out, _ = bench
    photo = quality.read_rgb(out / "testA" / _names(out / "testA")[0])

    def detail(image):  # median |Laplacian| of the grey image: fine texture (patch borders are few pixels)
        gray = image.astype(np.float64).mean(-1)
        return np.median(np.abs(4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2]
                                - gray[1:-1, 2:]))

    for name, paint in painters.PAINTERS.items():
        np.testing.assert_array_equal(paint(photo), paint(photo.copy()), err_msg=name)
        assert paint(photo).shape == photo.shape
    oil = painters.oil(photo)
    # Kuwahara: fine texture goes, a hard border stays. Two flat halves under noise of std 15:
    halves = np.where(np.arange(64) < 32, 60.0, 190.0)[None, :, None].repeat(64, 0).repeat(3, 2)
    noisy = np.clip(halves + np.random.default_rng(0).normal(0, 15, halves.shape), 0, 255).astype(np.uint8)
    flat = painters.kuwahara(noisy, 4)
    assert detail(flat) < 0.35 * detail(noisy)
    assert flat[:, 29].mean() < 80 and flat[:, 34].mean() > 170  # the border is not blurred
    assert np.abs(oil.astype(int) - photo).mean() > 10  # and the grade and relief change the picture
    ink = painters.ink(photo).reshape(-1, 3)
    paper = np.all(np.abs(ink.astype(int) - painters.PAPER.astype(int)) <= 1, axis=1).mean()
    assert paper > 0.3  # a large part of the photo became plain paper
    with pytest.raises(ValueError, match="unknown painter 'watercolour'; known: colour, oil, ink"):
        painters.get("watercolour")


def test_every_painter_gets_the_same_photos(tmp_path):
    manifests = {p: quality.build_benchmark(tmp_path / p, size=32, seed=1, n_train=8, n_test=4, painter=p)
                 for p in ("colour", "ink")}
    assert manifests["colour"]["images"] == manifests["ink"]["images"]
    assert manifests["ink"]["painter"] == "ink" and manifests["ink"]["filter"] == "cyclestyle.painters.ink"
    name = _names(tmp_path / "ink" / "testA")[0]
    photo = quality.read_rgb(tmp_path / "colour" / "testA" / name)
    np.testing.assert_array_equal(photo, quality.read_rgb(tmp_path / "ink" / "testA" / name))
    np.testing.assert_array_equal(quality.paint(photo, "ink"),
                                  quality.read_rgb(tmp_path / "ink" / "testA_painted" / name))
    with pytest.raises(quality.QualityError, match=r"painter='ink' \(asked 'colour'\)"):
        quality.load_or_build(tmp_path / "ink", 32, 1, 8, 4, reuse=True, painter="colour")


def test_training_beats_identity(bench, tmp_path):
    """End to end: train, export, translate the held-out photos, score; the JSON report has every field."""
    out, _ = bench
    report = quality.run_quality(out, tmp_path / "run", ROOT / "configs" / "base.yaml", E2E_OVERRIDES, steps=E2E_STEPS,
                                 seed=0, name="e2e", fid=False)
    print(quality.format_run(report))
    assert report["steps"] == E2E_STEPS and report["model"]["n"] == 16
    assert report["delta_psnr"] >= E2E_MARGIN_DB, quality.format_run(report)
    assert "model.ngf: 64 -> 8" in report["config_diff_vs_base"]
    path = quality.write_json(tmp_path / "report.json", report)
    data = json.loads(path.read_text())
    assert REPORT_FIELDS <= set(data)
    assert {"platform", "cpu_count", "torch"} <= set(data["machine"])
    assert data["machine"]["cpu"] == describe_cpu()  # which CPU kind made the figures (bf16 rounds differently)
    assert len(_names(Path(report["translations"]))) == 16
