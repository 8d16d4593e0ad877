"""The static comparison gallery (no browser): files, links, escaping, evaluation figures, user errors."""

from __future__ import annotations

import html.parser
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclestyle import evaluation
from cyclestyle.checkpoint import CheckpointError
from cyclestyle.cli import main
from cyclestyle.data import DataError
from cyclestyle.gallery import build_gallery

from .conftest import write_images

pytestmark = pytest.mark.usefixtures("single_threaded_module")  # tiny networks: see conftest.one_thread

HOSTILE = "run<script>alert(1)<"  # '/' cannot be in a file name; '<script>' can


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: Path) -> list[tuple[str, dict]]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tags


def fake_records(fid: float, kid_mean: float, kid_std: float, checkpoint) -> list[dict]:
    """The fields the gallery shows, with known numbers (a real report has many more, see evaluation.py)."""
    return [{"direction": "a2b", "fid": fid, "kid_mean": kid_mean, "kid_std": kid_std, "n_generated": 3,
             "n_reference": 3, "checkpoint": str(checkpoint), "checkpoint_step": 2, "timestamp": "2026-01-02T03:04:05",
             "library": "torch-fidelity", "library_version": "0.4.0", "feature_extractor": "inception-v3-compat",
             "weights_path": "/w.pth"}]


@pytest.fixture
def photos(tmp_path):
    folder = write_images(tmp_path / "photos", 3, size=(40, 28), seed=5)
    write_images(folder / "sub", 1, size=(30, 30), seed=6, ext="jpg")
    return folder


def test_page_links_existing_files_is_offline_and_shows_config(tiny_trained_run, photos, tmp_path):
    hostile = tmp_path / HOSTILE  # a second checkpoint: an export file in a folder with markup in its name
    hostile.mkdir()
    shutil.copy(tiny_trained_run / "generators" / "last.safetensors", hostile / "gen.safetensors")
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(photos / "x<img src=y onerror=alert(2)>.png")
    (photos / "broken.png").write_text("not an image")
    out = tmp_path / "gallery"
    with pytest.warns(UserWarning, match="broken.png"):
        page = build_gallery(photos, out, [tiny_trained_run, hostile / "gen.safetensors"], reconstruction=True,
                             device="cpu")
    text = page.read_text(encoding="utf-8")
    assert page == out / "index.html"
    assert "http://" not in text and "https://" not in text and "//" not in text.replace("<!DOCTYPE", "")
    tags = parse(page)
    assert {t for t, _ in tags}.isdisjoint({"script", "link", "iframe", "object", "embed"})
    images = [a["src"] for t, a in tags if t == "img"]
    links = [a["href"] for t, a in tags if t == "a"]
    # 5 readable inputs x (input + 2 checkpoints x (translation + reconstruction))
    assert len(images) == len(links) == 5 * 5
    for rel in images + links:
        assert not Path(rel).is_absolute() and ".." not in rel and (out / rel).is_file(), rel
    # full-size translations have the input's size (inputs are below --max-size)
    full = sorted((out / "full").rglob("*.png"))
    by_row: dict[str, set] = {}
    for f in full:
        by_row.setdefault(f.parent.name, set()).add(Image.open(f).size)
    assert len(by_row) == 5 and all(len(sizes) == 1 for sizes in by_row.values())
    # escaped: the hostile names appear only as text
    assert "<script" not in text and "<img src=y" not in text
    assert "run&lt;script&gt;alert(1)&lt;" in text and "x&lt;img src=y onerror=alert(2)&gt;.png" in text
    # the unreadable file is listed, the config and the export's model metadata are shown
    assert "broken.png" in text and "Skipped (1 unreadable)" in text
    assert "resnet_6blocks" in text and "config.yaml" in text and "step 2" in text
    assert "No FID/KID figures" in text


def test_evaluation_figures_shown_when_a_report_exists(tiny_trained_run, photos, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    report = evaluation.write_report(fake_records(12.3456, 0.00678, 0.0009, run),
                                     evaluation.default_output_dir(run) / "metrics.json")
    assert report == run / "eval" / "metrics.json"
    text = build_gallery(photos, tmp_path / "g1", [run], limit=1, device="cpu").read_text()
    assert "12.346" in text and "6.780 &plusmn; 0.900" in text and "No FID/KID figures" not in text
    # a report elsewhere, given explicitly (what `cyclestyle evaluate --json FILE` leads to)
    other = evaluation.write_report(fake_records(99.5, 0.1, 0.01, run), tmp_path / "elsewhere.json")
    text = build_gallery(photos, tmp_path / "g2", [str(run)], limit=1, device="cpu",
                         evaluation_files={str(run): other}).read_text()
    assert "99.500" in text and "100.000 &plusmn; 10.000" in text
    # a broken report does not stop the gallery: the page says what is wrong
    report.write_text("{not json")
    with pytest.warns(UserWarning, match="could not read"):
        text = build_gallery(photos, tmp_path / "g3", [run], limit=1, device="cpu").read_text()
    assert "could not read" in text and str(report) in text


def test_user_errors_name_the_path(tiny_trained_run, photos, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        build_gallery(missing, tmp_path / "out", [tiny_trained_run])
    empty = tmp_path / "empty"
    (empty / "deep").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty has no images"):
        build_gallery(empty, tmp_path / "out", [tiny_trained_run])
    no_export = tmp_path / "not_trained"
    no_export.mkdir()
    with pytest.raises(CheckpointError, match="not_trained"):
        build_gallery(photos, tmp_path / "out", [tiny_trained_run, no_export])
    assert not (tmp_path / "out" / "index.html").exists()
    # CLI: one line on stderr naming the path, exit code 2
    for argv, needle in ((["--input", str(missing), "--checkpoint", str(tiny_trained_run)], "nowhere"),
                         (["--input", str(empty), "--checkpoint", str(tiny_trained_run)], "empty"),
                         (["--input", str(photos), "--checkpoint", str(no_export)], "not_trained")):
        assert main(["gallery", "--output", str(tmp_path / "out"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("cyclestyle gallery: error:") and needle in err


def test_cli_writes_the_page(tiny_trained_run, photos, tmp_path, capsys):
    out = photos / "gallery"  # inside the input folder: a second run must not take its images as inputs
    for _ in range(2):
        assert main(["gallery", "--input", str(photos), "--output", str(out), "--checkpoint", str(tiny_trained_run),
                     "--direction", "b2a", "--max-size", "32", "--device", "cpu"]) == 0
        assert str(out / "index.html") in capsys.readouterr().out
        sizes = [Image.open(p).size for p in sorted((out / "full").rglob("input.png"))]
        assert len(sizes) == 4 and sorted(max(s) for s in sizes) == [30, 32, 32, 32]  # 40-48 px: downscaled
    assert main(["gallery", "--input", str(photos), "--output", str(tmp_path / "two"), "--checkpoint",
                 str(tiny_trained_run), "--limit", "2", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "two" / "full").rglob("input.png"))) == 2


def test_evaluate_writes_a_gallery_beside_its_json(tiny_trained_run, tmp_path, monkeypatch, capsys):
    from .test_evaluation import tiny_extractor

    monkeypatch.setattr(evaluation, "load_extractor", lambda weights=None, device="auto": tiny_extractor())
    test_a = write_images(tmp_path / "testA", 3, seed=7)
    test_b = write_images(tmp_path / "testB", 3, seed=8)
    json_path = tmp_path / "report" / "figures.json"
    assert main(["evaluate", "--checkpoint", str(tiny_trained_run), "--test-a", str(test_a), "--test-b",
                 str(test_b), "--direction", "a2b", "--output", str(tmp_path / "eval"), "--json", str(json_path),
                 "--no-cache", "--kid-subsets", "3", "--device", "cpu"]) == 0
    page = tmp_path / "report" / "gallery" / "index.html"
    assert f"gallery: {page}" in capsys.readouterr().out
    fid = json.loads(json_path.read_text())["results"][0]["fid"]
    assert f"{fid:.3f}" in page.read_text()
