"""A ground-truth translation benchmark: does training actually learn the translation? (issue #8)

On real photo/painting data CycleGAN has no right answer to score against, only distribution metrics
(FID, KID) that are noisy at small N. Here domain B is made from photos by a fixed, known, non-neural
painting filter, so for held-out photos the right answer is known exactly: a translation is scored by PSNR
and SSIM against it, next to the identity baseline (the untranslated photo against the same truth). A run
that learns beats the identity baseline by a clear margin; a broken recipe does not.

The benchmark (:func:`build_benchmark`)
---------------------------------------
- Photos: the colour photographs bundled in the scikit-image wheel (``SOURCES``: no download), loaded with
  the helpers of ``tools/make_sample_data.py``; of the stereo motorcycle pair only the left view is used
  (the right one shows the same scene).
- Filter: ``paint()`` of ``tools/make_sample_data.py`` (the bundled sample data's painting filter):
  edge-preserving smoothing, posterised lightness, boosted chroma, a strong warm colour grade and darkened
  edges. It is deterministic and mostly a local colour/tone mapping, and it moves the identity baseline far
  from the truth (about 17 dB PSNR), which leaves room to measure learning (the filter's colour grade alone
  scores about 26 dB). Measured on 2 CPU cores: a tiny unet_128 (ngf 8) at 128 px beats the identity
  baseline by 3.6-4.0 dB after 1000 steps (about a minute); ResNet generators learn it far more slowly
  (resnet_9blocks: +1.5 dB after 1500 steps at 128 px; resnet_6blocks at 32-64 px is still 2-3 dB below
  identity after 400-3000 steps: their early outputs are noisy). The README has the recipe tables.
- Unpaired, with a held-out test set: every photo is cut into a 2x2 grid of cells and each cell belongs to
  exactly one split (per photo, a seeded shuffle gives one cell to trainA, one to trainB, one to the test
  set and the fourth alternately to trainA or trainB). Every image is a random square crop inside one cell
  (50-100% of the cell's shorter side), resized to ``size`` px. So no pixel of a test photo is in a
  training image, and no photo in trainA has its painting in trainB; the crop boxes are recorded in the
  manifest, and the names say the cell (``<photo>-c<cell>_<nnn>.png``).
- Files (PNG, lossless, so that the truth is exactly ``paint(test photo)`` as read back from disk)::

      OUT/trainA/          photos                           (n_train)
      OUT/trainB/          painted photos of other cells    (n_train)
      OUT/testA/           held-out photos                  (n_test)
      OUT/testA_painted/   paint() of each testA image, same names: the ground truth
      OUT/benchmark.json   the manifest: parameters, cell roles, every file's photo, cell and crop box

The run (:func:`run_quality`)
-----------------------------
Trains with ``cyclestyle.training.train`` in this process, translates ``testA`` with
``cyclestyle.translate.Translator`` from the run's exported generators, and scores the translations and the
identity baseline against ``testA_painted``: PSNR (computed here) and SSIM (scikit-image). FID/KID of the
translations against ``testA_painted`` use :mod:`cyclestyle.evaluation` with the real Inception weights; when
those are missing the figure is reported as n/a with how to provide them, never silently replaced by a
random network (``random_inception=True`` exists for tests, and every report labels it).

Requirements: scikit-image (a dev extra: the photos and SSIM) and a source checkout of cyclestyle (the
photo and filter helpers live in ``tools/make_sample_data.py``). ``tools/quality_check.py`` is the command.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "base.yaml"
SAMPLE_TOOL = ROOT / "tools" / "make_sample_data.py"

# Colour photographs in the scikit-image wheel (see tools/make_sample_data.py for their licences; ``cat`` is
# ``chelsea`` again, so it is not listed). ``stereo_motorcycle`` is a (left, right, disparity) tuple.
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
           "stereo_motorcycle", "retina")
GRID = 2  # cells per side of each photo
CELL_CROP_FRACTION = (0.5, 1.0)  # crop side as a fraction of the cell's shorter side
FILTER = "tools/make_sample_data.py:paint"
BENCHMARK_VERSION = 1  # bump when the layout, the sources or the filter change: --reuse-data then refuses old data
SPLITS = ("trainA", "trainB", "testA", "testA_painted")
MANIFEST = "benchmark.json"


class QualityError(RuntimeError):
    """The benchmark cannot run as asked; the message is one line saying what to do."""


# --- photos and the filter (tools/make_sample_data.py) ------------------------------------------------


def sample_tools():
    """``tools/make_sample_data.py`` as a module: ``load_photo``, ``random_box``, ``paint``, ``split_counts``.

    Loaded by path because ``tools/`` is not a package; the benchmark is a development tool that runs from
    a source checkout, like the sample data it shares the filter with.
    """
    module = sys.modules.get("make_sample_data")
    if module is not None:
        return module
    if not SAMPLE_TOOL.is_file():
        raise QualityError(f"the quality benchmark needs a source checkout of cyclestyle: {SAMPLE_TOOL} not found")
    spec = importlib.util.spec_from_file_location("make_sample_data", SAMPLE_TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_sample_data"] = module
    spec.loader.exec_module(module)
    return module


def paint(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """The benchmark's A->B ground truth: the sample data's painting filter (RGB uint8 in and out)."""
    return sample_tools().paint(image_rgb_uint8)


def load_source(name: str) -> np.ndarray:
    """The photo ``name`` of :data:`SOURCES` as RGB uint8 (H, W, 3)."""
    try:
        import skimage.data
    except ImportError:
        raise QualityError("the quality benchmark needs scikit-image (pip install -e '.[dev]')") from None
    if name == "stereo_motorcycle":
        return np.ascontiguousarray(skimage.data.stereo_motorcycle()[0][..., :3])
    return sample_tools().load_photo(name)


def cell_bounds(height: int, width: int, cell: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of cell number ``cell`` (row-major) of the photo's GRID x GRID grid."""
    row, col = divmod(cell, GRID)
    top, bottom = row * height // GRID, (row + 1) * height // GRID
    left, right = col * width // GRID, (col + 1) * width // GRID
    return top, left, bottom - top, right - left


def cell_roles(n_sources: int, rng: np.random.Generator) -> list[list[str]]:
    """Per photo, the split of each cell: "A", "B" or "test" (one each, the fourth alternately A and B)."""
    roles = []
    for i in range(n_sources):
        order = rng.permutation(GRID * GRID)
        photo = [""] * (GRID * GRID)
        for cell, role in zip(order, ("A", "B", "test", "A" if i % 2 == 0 else "B")):
            photo[int(cell)] = role
        roles.append(photo)
    return roles


def _write_png(path: Path, image_rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(image_rgb[..., ::-1])):
        raise OSError(f"could not write {path}")


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _parameters(size: int, seed: int, n_train: int, n_test: int, sources: Sequence[str]) -> dict:
    return {"version": BENCHMARK_VERSION, "size": size, "seed": seed, "n_train": n_train, "n_test": n_test,
            "sources": list(sources), "grid": GRID, "cell_crop_fraction": list(CELL_CROP_FRACTION),
            "filter": FILTER}


def build_benchmark(out: str | Path, size: int = 128, seed: int = 0, n_train: int = 400, n_test: int = 64,
                    sources: Sequence[str] = SOURCES) -> dict:
    """Write the benchmark folders under ``out`` (old images there are deleted first); returns the manifest."""
    import cv2

    if size < 16 or size % 4:
        raise QualityError(f"--size must be a multiple of 4 and at least 16, got {size}")
    if n_train < 1 or n_test < 1:
        raise QualityError(f"the benchmark needs at least one training and one test image, got {n_train}, {n_test}")
    tools = sample_tools()
    cv2.setNumThreads(1)  # OpenCV's filters are only bit-reproducible single-threaded
    out = Path(out)
    for split in SPLITS:
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
    rng = np.random.default_rng(seed)
    roles = cell_roles(len(sources), rng)
    cells = {role: [(s, c) for s in range(len(sources)) for c in range(GRID * GRID) if roles[s][c] == role]
             for role in ("A", "B", "test")}
    quota = {"A": n_train, "B": n_train, "test": n_test}
    photos = [load_source(name) for name in sources]
    images = []
    for role in ("A", "B", "test"):
        for (s, c), count in zip(cells[role], tools.split_counts(quota[role], len(cells[role]))):
            photo = photos[s]
            top0, left0, h, w = cell_bounds(*photo.shape[:2], c)
            for index in range(count):
                top, left, side = tools.random_box(h, w, rng, CELL_CROP_FRACTION)
                top, left = top0 + top, left0 + left
                crop = cv2.resize(photo[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
                name = f"{sources[s]}-c{c}_{index:03d}.png"
                split = {"A": "trainA", "B": "trainB", "test": "testA"}[role]
                _write_png(out / split / name, paint(crop) if role == "B" else crop)
                if role == "test":
                    _write_png(out / "testA_painted" / name, paint(crop))
                images.append({"file": f"{split}/{name}", "split": split, "source": sources[s], "cell": c,
                               "box": [top, left, side]})
    counts = {split: len(list((out / split).glob("*.png"))) for split in SPLITS}
    manifest = {**_parameters(size, seed, n_train, n_test, sources), "counts": counts,
                "cell_roles": {name: roles[s] for s, name in enumerate(sources)}, "images": images}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_or_build(out: str | Path, size: int = 128, seed: int = 0, n_train: int = 400, n_test: int = 64,
                  reuse: bool = False, sources: Sequence[str] = SOURCES) -> dict:
    """The benchmark under ``out``: rebuilt, or with ``reuse`` the existing one if it was built with the same
    parameters (a mismatch is an error naming the differing parameters)."""
    path = Path(out) / MANIFEST
    if not reuse:
        return build_benchmark(out, size, seed, n_train, n_test, sources)
    if not path.is_file():
        print(f"quality: --reuse-data: no benchmark at {path} yet; building it")
        return build_benchmark(out, size, seed, n_train, n_test, sources)
    manifest = json.loads(path.read_text())
    wanted = _parameters(size, seed, n_train, n_test, sources)
    differ = [f"{k}={manifest.get(k)!r} (asked {v!r})" for k, v in wanted.items() if manifest.get(k) != v]
    if differ:
        raise QualityError(f"--reuse-data: {path} was built with other parameters: {', '.join(differ)}; "
                           "drop --reuse-data to rebuild it, or choose another --out")
    missing = [split for split in SPLITS if len(list((Path(out) / split).glob("*.png"))) != manifest["counts"][split]]
    if missing:
        raise QualityError(f"--reuse-data: {path.parent} has other files than its manifest lists in "
                           f"{', '.join(missing)}; drop --reuse-data to rebuild it")
    return manifest


# --- metrics --------------------------------------------------------------------------------------------


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(range^2 / MSE); inf for identical images."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"PSNR of images of different shapes: {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM over the image, channels scored separately (scikit-image's Wang et al. 2004, 7x7 window)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        raise QualityError("SSIM needs scikit-image (pip install -e '.[dev]')") from None
    return float(structural_similarity(np.asarray(x), np.asarray(y), channel_axis=-1, data_range=data_range))


def score(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    """PSNR and SSIM of (image, truth) pairs: the mean over images and the std across them."""
    p = np.array([psnr(a, b) for a, b in pairs])
    s = np.array([ssim(a, b) for a, b in pairs])
    return {"psnr": float(p.mean()), "psnr_std": float(p.std()), "ssim": float(s.mean()),
            "ssim_std": float(s.std()), "n": len(pairs)}


# --- one training run and its scores ----------------------------------------------------------------


def quality_overrides(bench_dir: str | Path, run_dir: str | Path, size: int, steps: int, seed: int) -> list[str]:
    """The settings the benchmark imposes before the user's overrides (which may change any of them).

    Images are already ``size`` px: load_size = crop_size = size, so training sees whole images (plus flips),
    as the test set is translated. Half the steps at constant LR then linear decay, as in the paper's recipe.
    Checkpoints and image grids only at the end: the benchmark scores the final weights.
    """
    bench_dir = Path(bench_dir)
    return [f"data.root_a={bench_dir / 'trainA'}", f"data.root_b={bench_dir / 'trainB'}",
            f"data.load_size={size}", f"data.crop_size={size}", f"train.run_dir={run_dir}",
            f"train.steps={steps}", f"train.decay_steps={steps // 2}", f"train.seed={seed}",
            f"train.checkpoint_every={steps}", f"train.image_every={steps}", "train.keep_checkpoints=1",
            f"train.log_every={max(1, min(50, steps // 10))}"]


def config_diff(cfg) -> list[str]:
    """``key: base -> used`` for every setting that differs from configs/base.yaml (same data folders)."""
    from cyclestyle import config as config_lib

    base_path = BASE_CONFIG if BASE_CONFIG.is_file() else None
    base = config_lib.load_config(base_path, [f"data.root_a={cfg.data.root_a}", f"data.root_b={cfg.data.root_b}"])
    return config_lib.diff(config_lib.to_dict(base), config_lib.to_dict(cfg))


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def fid_figures(generated: Path, reference: Path, inception_weights: str | None = None,
                random_inception: bool = False, cache_dir: str | Path | None = None, device: str = "auto") -> dict:
    """FID and KID of ``generated`` against ``reference``, or why they are not available.

    Real Inception weights only, unless ``random_inception`` (tests): then ``label`` says the numbers are not
    FID. Weights named explicitly (argument or $CYCLESTYLE_INCEPTION_WEIGHTS) must load; weights merely
    missing from torch hub's cache give ``fid: None`` and a note saying how to provide them.
    """
    from cyclestyle import evaluation

    explicit = bool(inception_weights or os.environ.get(evaluation.WEIGHTS_ENV))
    if random_inception:
        extractor, label = evaluation.load_extractor("random", device), "RANDOM Inception (test only): NOT FID"
    else:
        try:
            extractor, label = evaluation.load_extractor(inception_weights, device), "FID (Inception pool3)"
        except evaluation.EvaluationError as err:
            if explicit:
                raise
            how = (f"put {evaluation.INCEPTION_FILE} at {evaluation.hub_weights_path()} or pass "
                   f"--inception-weights FILE (download: {evaluation.inception_url()})")
            return {"fid": None, "kid_mean": None, "kid_std": None, "label": "n/a",
                    "note": f"n/a (no Inception weights: {how})", "cause": str(err)}
    figures = evaluation.compare_folders(generated, reference, extractor=extractor, cache_dir=cache_dir)
    return {"fid": figures["fid"], "kid_mean": figures["kid_mean"], "kid_std": figures["kid_std"],
            "kid_subset_size": figures["kid_subset_size"], "n": figures["n_1"], "label": label,
            "weights_path": figures["weights_path"], "weights_sha256": figures["weights_sha256"],
            "feature_extractor": figures["feature_extractor"]}


class _StepTimer:
    """``on_step`` callback: step timestamps, and the --minutes budget.

    ``train()`` has no stop hook besides its preemption handling, so when the budget is spent this raises
    SIGTERM in this process: training then stops after the current step with a checkpoint and an export,
    exactly as a preempted job does (``TrainResult.preempted``).
    """

    def __init__(self, minutes: float | None):
        self.deadline = time.perf_counter() + minutes * 60 if minutes else None
        self.times: list[float] = []
        self.stopped_by_time = False

    def __call__(self, step: int) -> None:
        self.times.append(time.perf_counter())
        if self.deadline is not None and not self.stopped_by_time and self.times[-1] > self.deadline:
            self.stopped_by_time = True
            print(f"\nquality: the --minutes budget is spent at step {step}: stopping there", flush=True)
            signal.raise_signal(signal.SIGTERM)

    def seconds_per_step(self) -> tuple[float | None, float | None]:
        """(mean, median) seconds per step, from the second step on (the first one includes warm-up)."""
        if len(self.times) < 3:
            return None, None
        gaps = np.diff(self.times[1:]) if len(self.times) > 3 else np.diff(self.times)
        return float(np.mean(gaps)), float(np.median(gaps))


def run_quality(bench_dir: str | Path, run_dir: str | Path, config: str | Path | None = BASE_CONFIG,
                overrides: Sequence[str] = (), steps: int = 1500, seed: int = 0, minutes: float | None = None,
                name: str = "run", fid: bool = True, inception_weights: str | None = None,
                random_inception: bool = False, fid_cache: str | Path | None = None) -> dict:
    """Train on the benchmark in ``bench_dir``, translate its test set, score it; returns the report dict.

    ``run_dir`` is replaced if it exists (it is this run's scratch folder). The user's ``overrides`` come
    after :func:`quality_overrides`, so any key can be changed.
    """
    from cyclestyle import config as config_lib
    from cyclestyle.training import resolve_precision, train
    from cyclestyle.translate import Translator

    started = time.perf_counter()
    bench_dir, run_dir = Path(bench_dir), Path(run_dir)
    manifest = json.loads((bench_dir / MANIFEST).read_text())
    size = manifest["size"]
    cfg = config_lib.load_config(config, [*quality_overrides(bench_dir, run_dir, size, steps, seed), *overrides])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    notes = []
    if cfg.loss.vgg_weights == "random" and (cfg.loss.style_ab > 0 or cfg.loss.style_ba > 0):
        notes.append("style loss on a RANDOM VGG (loss.vgg_weights=random): not the recipe's style loss")

    timer = _StepTimer(minutes)
    train_started = time.perf_counter()
    result = train(cfg, on_step=timer)
    train_seconds = time.perf_counter() - train_started

    # Translate with the exported generators, as a user would: this checks the export path too.
    device = "cpu" if cfg.train.cpu else "auto"
    translator = Translator.load(run_dir, direction="a2b", device=device, precision="fp32")
    out_dir = run_dir / "quality" / "translated"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in (bench_dir / "testA").glob("*.png"))
    model_pairs, identity_pairs = [], []
    from PIL import Image

    for file in names:
        photo, truth = read_rgb(bench_dir / "testA" / file), read_rgb(bench_dir / "testA_painted" / file)
        translated = np.asarray(translator(Image.fromarray(photo)))
        Image.fromarray(translated).save(out_dir / file)
        model_pairs.append((translated, truth))
        identity_pairs.append((photo, truth))
    model, identity = score(model_pairs), score(identity_pairs)

    fid_report = {"fid": None, "label": "skipped", "note": "skipped (--no-fid)"}
    if fid:
        fid_report = fid_figures(out_dir, bench_dir / "testA_painted", inception_weights, random_inception,
                                 fid_cache, device)
    mean_step, median_step = timer.seconds_per_step()
    return {
        "name": name, "overrides": list(overrides), "config": str(config) if config else None,
        "config_diff_vs_base": config_diff(cfg), "seed": seed, "steps": result.step, "steps_requested": steps,
        "stopped_by_time": timer.stopped_by_time, "minutes": minutes,
        "mixed_precision": resolve_precision(cfg.train.mixed_precision, cfg.train.cpu),
        "model": model, "identity": identity, "delta_psnr": model["psnr"] - identity["psnr"],
        "delta_ssim": model["ssim"] - identity["ssim"], "fid": fid_report, "notes": notes,
        "train_seconds": round(train_seconds, 2), "seconds_per_step": mean_step,
        "seconds_per_step_median": median_step, "wall_seconds": round(time.perf_counter() - started, 2),
        "run_dir": str(run_dir), "translations": str(out_dir), "final_losses": result.losses,
        "benchmark": {"dir": str(bench_dir), **{k: manifest[k] for k in ("version", "size", "seed", "n_train",
                                                                         "n_test", "filter", "counts")}},
        "machine": machine(), "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cyclestyle_version": _version(),
    }


def _version() -> str:
    from cyclestyle import __version__

    return __version__


# --- reports -------------------------------------------------------------------------------------------


def format_run(report: dict) -> str:
    """The human-readable summary of one :func:`run_quality` report."""
    m, i, f = report["model"], report["identity"], report["fid"]
    lines = [f"quality: {report['name']} seed {report['seed']}: {report['steps']} steps"
             + (" (stopped by --minutes)" if report["stopped_by_time"] else "")
             + f", {report['train_seconds']:.0f} s training"
             + (f", {report['seconds_per_step']:.3f} s/step" if report["seconds_per_step"] else "")
             + f", mixed precision {report['mixed_precision']}",
             f"  test set: {m['n']} held-out photos, {report['benchmark']['size']} px, truth = {FILTER}",
             f"  PSNR  model {m['psnr']:6.2f} dB   identity {i['psnr']:6.2f} dB   delta {report['delta_psnr']:+.2f} dB",
             f"  SSIM  model {m['ssim']:6.4f}      identity {i['ssim']:6.4f}      delta {report['delta_ssim']:+.4f}"]
    if f.get("fid") is None:
        lines.append(f"  FID: {f['note']}")
    else:
        prefix = "FID" if f["label"].startswith("FID") else f"[{f['label']}] FID"
        lines.append(f"  {prefix} {f['fid']:.2f}   KID {f['kid_mean']:.4f} ± {f['kid_std']:.4f}   "
                     f"(translations vs testA_painted, N={f['n']}: small-N, compare at equal N only)")
    lines += [f"  NOTE: {note}" for note in report["notes"]]
    lines.append(f"  translations: {report['translations']}")
    return "\n".join(lines)


def _mean_std(values: Sequence[float], digits: int, signed: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sign = "+" if signed else ""
    if len(values) == 1:
        return f"{values[0]:{sign}.{digits}f}"
    return f"{np.mean(values):{sign}.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def format_table(groups: dict[str, list[dict]], recipes: dict[str, list[str]]) -> str:
    """A markdown table: one row per recipe (mean ± sample std across seeds), the identity baseline first."""
    reports = [r for rs in groups.values() for r in rs]
    with_fid = any(r["fid"].get("fid") is not None for r in reports)
    random_fid = any("RANDOM" in r["fid"].get("label", "") for r in reports)
    head = ["recipe", "overrides", "seeds", "steps", "PSNR (dB)", "SSIM", "Δ PSNR vs identity (dB)", "s/step (median)"]
    if with_fid:
        head += ["FID" + (" (RANDOM Inception: not FID)" if random_fid else ""), "KID"]
    rows = [head, ["---"] * len(head)]
    if reports:
        i = reports[0]["identity"]
        rows.append(["identity (input photo)", "", "", "", f"{i['psnr']:.2f}", f"{i['ssim']:.4f}", "0", ""]
                    + (["", ""] if with_fid else []))
    for name, rs in groups.items():
        overrides = " ".join(recipes.get(name, [])) or "(none)"
        if not rs:
            rows.append([name, overrides, "failed", "", "", "", "", ""] + (["", ""] if with_fid else []))
            continue
        steps = sorted({r["steps"] for r in rs})
        row = [name, overrides, " ".join(str(r["seed"]) for r in rs), "/".join(map(str, steps)),
               _mean_std([r["model"]["psnr"] for r in rs], 2), _mean_std([r["model"]["ssim"] for r in rs], 4),
               _mean_std([r["delta_psnr"] for r in rs], 2, signed=True), _mean_std([r["seconds_per_step_median"] for r in rs], 3)]
        if with_fid:
            row += [_mean_std([r["fid"].get("fid") for r in rs], 1), _mean_std([r["fid"].get("kid_mean") for r in rs], 4)]
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def write_json(path: str | Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
