"""FID / KID: the maths against closed forms, the folder plumbing, the cache, the commands and the weights.

A tiny random feature extractor (a torch-fidelity FeatureExtractorBase, like the real Inception) stands in
for Inception everywhere except the tests of the Inception loading itself.
"""

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from cyclestyle import checkpoint, evaluation, nets
from cyclestyle.cli import main
from cyclestyle.config import ModelConfig
from cyclestyle.evaluation import EvaluationError

REPORT_FIELDS = {"direction", "fid", "kid_mean", "kid_std", "kid_subsets", "kid_subset_size", "n_generated",
                 "n_reference", "inception_input_size", "resize", "library", "library_version", "weights_path",
                 "weights_sha256", "feature_dim", "feature_extractor", "feature_layer", "checkpoint", "test_a",
                 "test_b", "timestamp", "cyclestyle_version", "generated_format", "kid_seed"}


class TinyNet(FeatureExtractorBase):
    """Resize to 16 px, one random conv, mean and std pooling: 16 features. Counts its calls."""

    def __init__(self):
        super().__init__("tiny-random", ["16"])
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.calls = 0

    @staticmethod
    def get_provided_features_list():
        return ("16",)

    def forward(self, x):
        self.calls += 1
        assert x.dtype == torch.uint8 and x.shape[1] == 3  # the same input contract as torch-fidelity's Inception
        x = (F.interpolate(x.float(), size=(16, 16), mode="bilinear", align_corners=False) - 128) / 128
        h = F.relu(self.conv(x))
        return (torch.cat([h.mean((2, 3)), h.std((2, 3))], 1),)


def tiny_extractor() -> evaluation.Extractor:
    return evaluation.Extractor(TinyNet().eval(), "tiny-random", "16", 16, 16, "bilinear to 16x16 (test)", None,
                                "tiny-seed0")


def perturbed_copy(src, dst):
    """Every image blurred and colour-inverted: a clearly different distribution of the same scenes."""
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        img = Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(2))
        Image.fromarray(255 - np.asarray(img)).save(dst / path.name)
    return dst


@pytest.fixture
def photos(tmp_path):
    """12 noisy images of one kind of scene (base colours close together), 40-48 x 36-38 px: mixed sizes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(12):
        w, h = 40 + 4 * (i % 3), 36 + 2 * (i % 2)
        base = np.array([120, 100, 80]) + rng.integers(-15, 15, 3)
        Image.fromarray(np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)).save(
            folder / f"img_{i:02d}.png")
    return folder


# --- the maths -------------------------------------------------------------------------------------------


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert evaluation.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, abs=1e-9)
    # Diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    assert evaluation.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(5 + 1 + 1 + 0, abs=1e-9)
    # Full covariances S and c^2 S: (S c^2 S)^1/2 = c S, so the trace term is tr(S) (1 - c)^2.
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    sigma = m @ m.T + 0.5 * np.eye(6)
    dmu = rng.normal(size=6)
    expected = dmu @ dmu + np.trace(sigma) * (1 - 3.0) ** 2
    assert evaluation.frechet_distance(dmu, sigma, np.zeros(6), 9.0 * sigma) == pytest.approx(expected, rel=1e-9)
    assert evaluation.frechet_distance(dmu, sigma, dmu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_statistics_of_samples_converge_to_the_closed_form():
    rng = np.random.default_rng(1)
    s1, s2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    x = rng.multivariate_normal([0.0, 0.0], s1, size=200_000)
    y = rng.multivariate_normal([1.0, -1.0], s2, size=200_000)
    mu_x, sigma_x = evaluation.statistics(x)
    assert np.allclose(sigma_x, s1, atol=0.02) and np.allclose(mu_x, 0, atol=0.01)
    # tr((S1 S2)^1/2) in closed form for 2x2: sqrt(tr(S1 S2) + 2 sqrt(det(S1 S2)))
    p = s1 @ s2
    expected = 2.0 + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.trace(p) + 2 * np.sqrt(np.linalg.det(p)))
    assert evaluation.frechet_distance([0.0, 0.0], s1, [1.0, -1.0], s2) == pytest.approx(expected, rel=1e-9)
    # From 200k samples a side the estimate is within sampling error (~0.02 here) of the closed form.
    assert evaluation.frechet_distance(*evaluation.statistics(x), *evaluation.statistics(y)) == pytest.approx(
        expected, abs=0.05)


def test_kid_subset_size_is_capped_and_reported():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(20, 8)) + 1.0
    out = evaluation.kid(x, y, subsets=10, subset_size=1000)
    assert out["kid_subset_size"] == 20 and out["kid_subsets"] == 10 and out["kid_mean"] > 0.1
    assert evaluation.kid(x, y, subsets=10, subset_size=1000) == out  # seeded subsets: reproducible
    with pytest.raises(EvaluationError, match="at least 2 images"):
        evaluation.kid(x[:1], y)


# --- folders ----------------------------------------------------------------------------------------------


def test_identical_folders_give_zero_and_a_perturbed_copy_more(photos, tmp_path):
    ex = tiny_extractor()
    same = evaluation.compare_folders(photos, photos, extractor=ex, kid_subsets=20, kid_subset_size=6)
    other = evaluation.compare_folders(photos, perturbed_copy(photos, tmp_path / "perturbed"), extractor=ex,
                                       kid_subsets=20, kid_subset_size=6)
    assert same["n_1"] == same["n_2"] == 12 and other["n_2"] == 12
    assert abs(same["fid"]) < 1e-6 and other["fid"] > 0.1
    # KID's estimator is unbiased for independent sets; a set against itself comes out slightly negative
    # (self-pairs), by ~1/N of the spread within the set: near 0 next to a real difference.
    assert -0.03 * other["kid_mean"] < same["kid_mean"] <= 0 and other["kid_mean"] > 0.01
    # Independent of names and order: a renamed copy gives the very same numbers.
    renamed = tmp_path / "renamed" / "deeper"
    renamed.mkdir(parents=True)
    for i, path in enumerate(sorted(photos.iterdir(), reverse=True)):
        shutil.copy(path, renamed / f"x{i}.png")
    again = evaluation.compare_folders(photos, renamed.parent, extractor=ex, kid_subsets=20, kid_subset_size=6)
    assert (again["fid"], again["kid_mean"]) == (same["fid"], same["kid_mean"])


def test_cache_hit_same_numbers_without_calling_the_extractor(photos, tmp_path):
    cache = tmp_path / "cache"
    other = perturbed_copy(photos, tmp_path / "perturbed")
    first = evaluation.compare_folders(photos, other, extractor=tiny_extractor(), cache_dir=cache)
    assert not first["cache_hit_1"] and len(list(cache.glob("*.npz"))) == 2
    ex = tiny_extractor()
    second = evaluation.compare_folders(photos, other, extractor=ex, cache_dir=cache)
    assert ex.net.calls == 0 and second["cache_hit_1"] and second["cache_hit_2"]
    assert (second["fid"], second["kid_mean"], second["kid_std"]) == (first["fid"], first["kid_mean"], first["kid_std"])
    # A changed file is a miss (the key is the content), and so is another extractor's protocol.
    Image.new("RGB", (40, 36), (0, 0, 0)).save(other / "img_00.png")
    third = evaluation.compare_folders(photos, other, extractor=ex, cache_dir=cache)
    assert third["cache_hit_1"] and not third["cache_hit_2"] and ex.net.calls > 0 and third["fid"] != first["fid"]
    changed = dataclasses.replace(tiny_extractor(), weights_sha256="other-weights")
    assert not evaluation.compare_folders(photos, other, extractor=changed, cache_dir=cache)["cache_hit_1"]
    # A damaged entry is recomputed, with a warning, to the same numbers.
    entry = first["features_file_1"]
    with open(entry, "r+b") as f:
        f.truncate(200)
    ex = tiny_extractor()
    with pytest.warns(UserWarning, match="damaged cache entry"):
        side = evaluation.folder_features(photos, ex, cache)
    assert ex.net.calls > 0 and not side.cache_hit
    assert evaluation.compare_folders(photos, photos, extractor=ex, cache_dir=cache)["cache_hit_1"]


def test_bad_files_skipped_and_counted_mixed_sizes_and_modes(hostile_corpus, tmp_path):
    root, good, header_bad, decode_bad = hostile_corpus
    with pytest.warns(UserWarning):
        side = evaluation.folder_features(root, tiny_extractor(), tmp_path / "cache", "hostile")
    assert side.n == len(good)  # 1x1 px, 20x30 16-bit, 64x48 CMYK...: every readable image, any size and mode
    assert {name.split("/")[-1] for name, _ in side.skipped} == header_bad | decode_bad
    assert all(why for _, why in side.skipped)
    cached = evaluation.folder_features(root, tiny_extractor(), tmp_path / "cache", "hostile")
    assert cached.cache_hit and cached.skipped == side.skipped and np.array_equal(cached.features, side.features)


def test_stats_files_are_accepted_and_a_foreign_protocol_refused(photos, tmp_path):
    cache = tmp_path / "cache"
    ex = tiny_extractor()
    direct = evaluation.compare_folders(photos, photos, extractor=ex, cache_dir=cache)
    via_file = evaluation.compare_folders(direct["features_file_1"], photos, extractor=ex, cache_dir=cache)
    assert via_file["fid"] == direct["fid"] and via_file["n_1"] == 12
    stranger = dataclasses.replace(ex, name="other-net")
    with pytest.raises(EvaluationError, match="another protocol.*feature_extractor"):
        evaluation.compare_folders(direct["features_file_1"], photos, extractor=stranger)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EvaluationError, match="junk.npz is not a readable"):
        evaluation.compare_folders(tmp_path / "junk.npz", photos, extractor=ex)


def test_fid_command_table_json_and_errors(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluation, "load_extractor", lambda weights=None, device="auto": tiny_extractor())
    other = perturbed_copy(photos, tmp_path / "perturbed")
    out = tmp_path / "fid.json"
    assert main(["fid", str(photos), str(other), "--cache-dir", str(tmp_path / "c"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())["results"][0]
    assert f"{record['fid']:.3f}" in printed and "torch-fidelity 0.4.0" in printed
    assert record["n_1"] == record["n_2"] == 12 and record["library"] == "torch-fidelity"
    assert main(["fid", str(photos), str(tmp_path / "nowhere"), "--no-cache"]) == 2
    assert "nowhere" in capsys.readouterr().err


# --- evaluate a generator -----------------------------------------------------------------------------------


def make_export(path):
    torch.manual_seed(0)
    cfg = ModelConfig(generator="resnet_6blocks", ngf=4, init_gain=0.3)
    gens = {"gen_ab": nets.build_generator(cfg), "gen_ba": nets.build_generator(cfg)}
    return checkpoint.save_generators(path, gens, dataclasses.asdict(cfg), step=3, ema=False)


def test_evaluate_checkpoint_json_has_every_field(folders, tmp_path):
    test_a, test_b = folders  # 6 png; 5 jpg, one in a sub-folder
    run = tmp_path / "run"
    make_export(run / "generators" / "last.safetensors")
    stale = run / "eval" / "a2b" / "left_from_an_earlier_test_set.png"
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (40, 36)).save(stale)
    ex = tiny_extractor()
    records = evaluation.evaluate_checkpoint(run, test_a, test_b, extractor=ex, cache_dir=tmp_path / "cache",
                                             kid_subsets=10)
    report = json.loads((run / "eval" / "metrics.json").read_text())["results"]
    assert [r["direction"] for r in report] == ["a2b", "b2a"] and len(records) == 2
    for r in report:
        assert REPORT_FIELDS <= set(r), REPORT_FIELDS - set(r)
        assert np.isfinite(r["fid"]) and r["fid"] > 0 and r["kid_subset_size"] == 5 and r["kid_subsets"] == 10
        assert r["library"] == "torch-fidelity" and r["library_version"] == "0.4.0" and r["feature_dim"] == 16
        assert r["checkpoint_step"] == 3 and r["generated_format"] == "png" and not r["reference_cache_hit"]
    a2b, b2a = report
    assert (a2b["n_generated"], a2b["n_reference"], b2a["n_generated"], b2a["n_reference"]) == (6, 5, 5, 6)
    assert (run / "eval" / "b2a" / "nested" / "img_00.png").is_file()  # sub-folders mirrored, PNG
    # Again: the real test sets come from the cache, only the translations go through the extractor.
    ex = tiny_extractor()
    again = evaluation.evaluate_checkpoint(run / "generators" / "last.safetensors", test_a, test_b, "a2b",
                                           tmp_path / "out", extractor=ex, cache_dir=tmp_path / "cache", kid_subsets=10)
    sizes = {Image.open(p).size for p in (tmp_path / "out" / "a2b").iterdir()}
    assert again[0]["reference_cache_hit"] and ex.net.calls == len(sizes)  # one batch per size, none for test_b
    assert again[0]["fid"] == pytest.approx(a2b["fid"], rel=1e-9)


def test_evaluate_command(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluation, "load_extractor", lambda weights=None, device="auto": tiny_extractor())
    test_a, test_b = folders
    export = make_export(tmp_path / "gen.safetensors")
    assert main(["evaluate", "--checkpoint", str(export), "--test-a", str(test_a), "--test-b", str(test_b),
                 "--direction", "b2a", "--no-cache", "--kid-subsets", "5"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "gen-eval" / "metrics.json").read_text())["results"][0]
    assert record["direction"] == "b2a" and f"{record['fid']:.3f}" in printed and "5 vs 6" in printed
    assert main(["evaluate", "--checkpoint", str(export), "--test-a", str(tmp_path / "missing"), "--test-b",
                 str(test_b)]) == 2
    assert "--test-a folder not found" in capsys.readouterr().err
    monkeypatch.setattr(evaluation, "load_extractor", lambda *a, **k: pytest.fail("Inception loaded before the check"))
    assert main(["evaluate", "--checkpoint", str(tmp_path / "no_run"), "--test-a", str(test_a), "--test-b",
                 str(test_b)]) == 2
    assert "no_run" in capsys.readouterr().err


# --- Inception weights ------------------------------------------------------------------------------------


def test_missing_weights_say_which_file_to_put_where(photos, tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(evaluation.WEIGHTS_ENV, raising=False)
    expected_place = str(tmp_path / "torch" / "hub" / "checkpoints" / evaluation.INCEPTION_FILE)
    with pytest.raises(EvaluationError) as err:
        evaluation.load_inception()
    message = str(err.value)
    assert expected_place in message and "download failed" in message and "--inception-weights" in message
    assert evaluation.WEIGHTS_ENV in message and evaluation.inception_url() in message
    assert no_network  # the download was really attempted and stopped by the block
    monkeypatch.setenv(evaluation.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(EvaluationError, match="nope.pth"):
        evaluation.load_inception()
    assert main(["fid", str(photos), str(photos), "--inception-weights", str(tmp_path / "gone.pth")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "gone.pth" in err_lines[0] and expected_place in err_lines[0]


class NotAWeight:
    pass


def test_weights_files_are_vetted_before_torch_fidelity_unpickles_them(tmp_path):
    crafted = tmp_path / "crafted.pth"
    torch.save({"x": NotAWeight()}, crafted)
    with pytest.raises(EvaluationError, match="crafted.pth is not a plain state_dict"):
        evaluation.load_inception(str(crafted), "cpu")
    wrong = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(2)}, wrong)
    with pytest.raises(EvaluationError, match="vgg.pth does not hold torch-fidelity's Inception"):
        evaluation.load_inception(str(wrong), "cpu")


def test_real_inception_architecture_random_and_from_a_local_file(tmp_path, monkeypatch):
    """The TF-reference Inception, kaiming-initialised, then its weights saved and loaded as a user's file."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (2, 3, 40, 52), dtype=np.uint8))
    random_ex = evaluation.load_inception("random", "cpu")
    features = random_ex(images)
    assert features.shape == (2, 2048) and random_ex.protocol()["inception_input_size"] == 299
    assert features.std(axis=0).mean() > 1e-4  # not collapsed, unlike PyTorch's default init
    weights = tmp_path / evaluation.INCEPTION_FILE
    torch.save(random_ex.net.state_dict(), weights)
    monkeypatch.setenv(evaluation.WEIGHTS_ENV, str(weights))
    loaded = evaluation.load_inception(None, "cpu")
    assert loaded.weights_path == str(weights) and loaded.name == "inception-v3-compat"
    assert loaded.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert np.allclose(loaded(images), features, atol=1e-5)
