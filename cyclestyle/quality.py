"""A ground-truth translation benchmark: does training learn the translation, texture and all?

On real photo/painting data CycleGAN has no right answer to score against, only distribution metrics
(FID, KID) that are noisy at small N. Here domain B is made from photos by a fixed, known, non-neural
painter (:mod:`cyclestyle.painters`), so for held-out photos the right answer is known exactly: a translation
is scored by PSNR and SSIM against it, next to the identity baseline (the untranslated photo against the same
truth). A run that learns beats the identity baseline by a clear margin; a broken recipe does not.

Painters, and why several: a recipe tuned on one painter learns what that painter asks for. ``colour`` is
mostly a colour and tone mapping, ``oil`` changes texture (flat patches, impasto relief), ``ink`` changes
structure (tones become lines, flat areas become paper). A default is chosen on the mean over painters.

The benchmark (:func:`build_benchmark`, one folder per painter)
---------------------------------------------------------------
- Photos: the colour photographs bundled in the scikit-image wheel (``SOURCES``: no download); of the stereo
  motorcycle pair only the left view is used (the right one shows the same scene).
- Unpaired, with a held-out test set: every photo is cut into a 2x2 grid of cells and each cell belongs to
  exactly one split (per photo, a seeded shuffle gives one cell to trainA, one to trainB, one to the test
  set and the fourth alternately to trainA or trainB). Every image is a random square crop inside one cell
  (50-100% of the cell's shorter side), resized to ``size`` px with area averaging. So no pixel of a test
  photo is in a training image, and no photo in trainA has its painting in trainB; the crop boxes are
  recorded in the manifest, and the names say the cell (``<photo>-c<cell>_<nnn>.png``). The crops do not
  depend on the painter: every painter's benchmark has the same trainA and testA.
- Files (PNG, lossless, so that the truth is exactly ``painter(test photo)`` as read back from disk)::

      OUT/trainA/          photos                           (n_train)
      OUT/trainB/          painted photos of other cells    (n_train)
      OUT/testA/           held-out photos                  (n_test)
      OUT/testA_painted/   the painter's rendering of each testA image, same names: the ground truth
      OUT/benchmark.json   the manifest: parameters, cell roles, every file's photo, cell and crop box

The run (:func:`run_quality`)
-----------------------------
Trains with ``cyclestyle.training.train`` in this process, translates ``testA`` with
``cyclestyle.translate.Translator`` from the run's exported generators, and scores the translations and the
identity baseline against ``testA_painted``: PSNR (computed here), SSIM (scikit-image) and a grid-artifact
figure (:func:`grid_energy_db`: spectral energy at the generator's stride frequencies, relative to the
truth's). FID/KID of the translations against ``testA_painted`` use :mod:`cyclestyle.evaluation` with the
real Inception weights; when those are missing the figure is reported as n/a with how to provide them, never
silently replaced by a random network (``random_inception=True`` exists for tests, and every report labels it).

Requirements: scikit-image (the ``dev`` extra: the photos and SSIM). The command is
``python -m cyclestyle.quality_check`` (``tools/quality_check.py`` in a checkout).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from cyclestyle import painters

# Colour photographs in the scikit-image wheel (see tools/make_sample_data.py for their licences; ``cat`` is
# ``chelsea`` again, so it is not listed). ``stereo_motorcycle`` is a (left, right, disparity) tuple.
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
           "stereo_motorcycle", "retina")
GRID = 2  # cells per side of each photo
CELL_CROP_FRACTION = (0.5, 1.0)  # crop side as a fraction of the cell's shorter side
PAINTERS = tuple(painters.PAINTERS)
BENCHMARK_VERSION = 2  # bump when the layout, the sources or the filter change: --reuse-data then refuses old data
SPLITS = ("trainA", "trainB", "testA", "testA_painted")
MANIFEST = "benchmark.json"


class QualityError(RuntimeError):
    """The benchmark cannot run as asked; the message is one line saying what to do."""


# --- photos ------------------------------------------------------------------------------------------


def load_photo(name: str) -> np.ndarray:
    """The scikit-image photograph ``name`` as RGB uint8 (H, W, 3) (the stereo pair: its left view)."""
    try:
        import skimage.data
    except ImportError:
        raise QualityError("the quality benchmark needs scikit-image (pip install -e '.[dev]')") from None
    image = getattr(skimage.data, name)()
    image = np.asarray(image[0] if name == "stereo_motorcycle" else image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.dtype != np.uint8:
        raise QualityError(f"skimage.data.{name} is {image.dtype}, expected uint8")
    return np.ascontiguousarray(image[..., :3])


def random_box(height: int, width: int, rng: np.random.Generator,
               fraction: tuple[float, float] = CELL_CROP_FRACTION) -> tuple[int, int, int]:
    """A random square ``(top, left, side)`` inside a ``height`` x ``width`` image, its side a uniform
    ``fraction`` of the shorter side."""
    side = int(round(min(height, width) * rng.uniform(*fraction)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return top, left, side


def split_counts(total: int, n_parts: int) -> list[int]:
    """Share ``total`` images among ``n_parts`` as evenly as possible."""
    return [total // n_parts + (1 if i < total % n_parts else 0) for i in range(n_parts)]


def paint(image_rgb_uint8: np.ndarray, painter: str = "colour") -> np.ndarray:
    """The benchmark's A->B ground truth for ``painter`` (RGB uint8 in and out)."""
    return painters.get(painter)(image_rgb_uint8)


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


def _parameters(size: int, seed: int, n_train: int, n_test: int, sources: Sequence[str], painter: str) -> dict:
    return {"version": BENCHMARK_VERSION, "size": size, "seed": seed, "n_train": n_train, "n_test": n_test,
            "sources": list(sources), "grid": GRID, "cell_crop_fraction": list(CELL_CROP_FRACTION),
            "painter": painter, "filter": f"cyclestyle.painters.{painter}"}


def build_benchmark(out: str | Path, size: int = 128, seed: int = 0, n_train: int = 400, n_test: int = 64,
                    sources: Sequence[str] = SOURCES, painter: str = "colour") -> dict:
    """Write the benchmark of ``painter`` under ``out`` (old images there are deleted first); returns the
    manifest. The crops depend on ``seed`` only, so every painter gets the same photos."""
    import cv2

    if size < 16 or size % 4:
        raise QualityError(f"--size must be a multiple of 4 and at least 16, got {size}")
    if n_train < 1 or n_test < 1:
        raise QualityError(f"the benchmark needs at least one training and one test image, got {n_train}, {n_test}")
    if painter not in painters.PAINTERS:
        raise QualityError(f"unknown painter '{painter}'; known: {', '.join(painters.PAINTERS)}")
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
    photos = [load_photo(name) for name in sources]
    images = []
    for role in ("A", "B", "test"):
        for (s, c), count in zip(cells[role], split_counts(quota[role], len(cells[role]))):
            photo = photos[s]
            top0, left0, h, w = cell_bounds(*photo.shape[:2], c)
            for index in range(count):
                top, left, side = random_box(h, w, rng, CELL_CROP_FRACTION)
                top, left = top0 + top, left0 + left
                crop = cv2.resize(photo[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
                name = f"{sources[s]}-c{c}_{index:03d}.png"
                split = {"A": "trainA", "B": "trainB", "test": "testA"}[role]
                _write_png(out / split / name, paint(crop, painter) if role == "B" else crop)
                if role == "test":
                    _write_png(out / "testA_painted" / name, paint(crop, painter))
                images.append({"file": f"{split}/{name}", "split": split, "source": sources[s], "cell": c,
                               "box": [top, left, side]})
    counts = {split: len(list((out / split).glob("*.png"))) for split in SPLITS}
    manifest = {**_parameters(size, seed, n_train, n_test, sources, painter), "counts": counts,
                "cell_roles": {name: roles[s] for s, name in enumerate(sources)}, "images": images}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_or_build(out: str | Path, size: int = 128, seed: int = 0, n_train: int = 400, n_test: int = 64,
                  reuse: bool = False, sources: Sequence[str] = SOURCES, painter: str = "colour") -> dict:
    """The benchmark of ``painter`` under ``out``: rebuilt, or with ``reuse`` the existing one if it was built
    with the same parameters (a mismatch is an error naming the differing parameters)."""
    path = Path(out) / MANIFEST
    if not reuse:
        return build_benchmark(out, size, seed, n_train, n_test, sources, painter)
    if not path.is_file():
        print(f"quality: --reuse-data: no benchmark at {path} yet; building it")
        return build_benchmark(out, size, seed, n_train, n_test, sources, painter)
    manifest = json.loads(path.read_text())
    wanted = _parameters(size, seed, n_train, n_test, sources, painter)
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


def grid_energy_db(pairs: Sequence[tuple[np.ndarray, np.ndarray]], period: int = 8) -> float:
    """Checkerboard/grid artifacts: spectral energy at the frequencies of a pattern that repeats every
    ``period`` px (every multiple of 1/period cycles per pixel on both axes, DC excluded), of the images
    relative to their truths, in dB (summed over the pairs). A stride-2 upsampling's uneven overlap
    (Odena et al. 2016) leaves a pattern of period 2, 4, 8 ... px, all caught by ``period=8``; 0 dB means as
    much energy there as the truth has, +3 dB twice as much."""
    def energy(image: np.ndarray) -> float:
        gray = np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])
        power = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
        h, w = gray.shape
        rows = np.unique(np.round(np.arange(period) * h / period).astype(int) % h)
        cols = np.unique(np.round(np.arange(period) * w / period).astype(int) % w)
        return float(power[np.ix_(rows, cols)].sum() - power[0, 0])

    image_energy = sum(energy(a) for a, _ in pairs)
    truth_energy = sum(energy(b) for _, b in pairs)
    return float(10.0 * np.log10(max(image_energy, 1e-12) / max(truth_energy, 1e-12)))


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
    """``key: base -> used`` for every setting that differs from the defaults (the schema's, which a test keeps
    equal to configs/base.yaml's), with the same data folders."""
    from cyclestyle import config as config_lib

    base = config_lib.load_config(None, [f"data.root_a={cfg.data.root_a}", f"data.root_b={cfg.data.root_b}"])
    return config_lib.diff(config_lib.to_dict(base), config_lib.to_dict(cfg))


def machine() -> dict:
    import torch

    from cyclestyle.devices import describe_cpu

    # "cpu": model, family and the speed flags; bf16 rounding differs between CPU kinds, so figures do too
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": describe_cpu(),
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


def run_quality(bench_dir: str | Path, run_dir: str | Path, config: str | Path | None = None,
                overrides: Sequence[str] = (), steps: int = 1500, seed: int = 0, minutes: float | None = None,
                name: str = "run", fid: bool = True, inception_weights: str | None = None,
                random_inception: bool = False, fid_cache: str | Path | None = None) -> dict:
    """Train on the benchmark in ``bench_dir``, translate its test set, score it; returns the report dict.

    ``run_dir`` is replaced if it exists (it is this run's scratch folder). The user's ``overrides`` come
    after :func:`quality_overrides`, so any key can be changed.
    """
    from cyclestyle import config as config_lib
    from cyclestyle.devices import resolve_precision
    from cyclestyle.training import train
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
    model["grid_db"], identity["grid_db"] = grid_energy_db(model_pairs), grid_energy_db(identity_pairs)

    fid_report = {"fid": None, "label": "skipped", "note": "skipped (--no-fid)"}
    if fid:
        fid_report = fid_figures(out_dir, bench_dir / "testA_painted", inception_weights, random_inception,
                                 fid_cache, device)
    mean_step, median_step = timer.seconds_per_step()
    return {
        "name": name, "painter": manifest.get("painter", "colour"), "overrides": list(overrides),
        "config": str(config) if config else None,
        "config_diff_vs_base": config_diff(cfg), "seed": seed, "steps": result.step, "steps_requested": steps,
        "stopped_by_time": timer.stopped_by_time, "minutes": minutes,
        "mixed_precision": resolve_precision(cfg.train.mixed_precision, cfg.train.cpu),
        "model": model, "identity": identity, "delta_psnr": model["psnr"] - identity["psnr"],
        "delta_ssim": model["ssim"] - identity["ssim"], "fid": fid_report, "notes": notes,
        "train_seconds": round(train_seconds, 2), "seconds_per_step": mean_step,
        "seconds_per_step_median": median_step, "wall_seconds": round(time.perf_counter() - started, 2),
        "run_dir": str(run_dir), "translations": str(out_dir), "final_losses": result.losses,
        "benchmark": {"dir": str(bench_dir), **{k: manifest[k] for k in ("version", "size", "seed", "n_train",
                                                                         "n_test", "painter", "filter",
                                                                         "counts")}},
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
    lines = [f"quality: {report['name']} on {report['painter']}, seed {report['seed']}: {report['steps']} steps"
             + (" (stopped by --minutes)" if report["stopped_by_time"] else "")
             + f", {report['train_seconds']:.0f} s training"
             + (f", {report['seconds_per_step']:.3f} s/step" if report["seconds_per_step"] else "")
             + f", mixed precision {report['mixed_precision']}",
             f"  test set: {m['n']} held-out photos, {report['benchmark']['size']} px, "
             f"truth = {report['benchmark']['filter']}",
             f"  PSNR  model {m['psnr']:6.2f} dB   identity {i['psnr']:6.2f} dB   delta {report['delta_psnr']:+.2f} dB",
             f"  SSIM  model {m['ssim']:6.4f}      identity {i['ssim']:6.4f}      delta {report['delta_ssim']:+.4f}",
             f"  grid  model {m['grid_db']:+6.2f} dB   (energy at 8-px-periodic frequencies vs the truth's)"]
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


def _painter_table(groups: dict[str, list[dict]], recipes: dict[str, list[str]]) -> str:
    reports = [r for rs in groups.values() for r in rs]
    with_fid = any(r["fid"].get("fid") is not None for r in reports)
    random_fid = any("RANDOM" in r["fid"].get("label", "") for r in reports)
    head = ["recipe", "overrides", "seeds", "steps", "PSNR (dB)", "SSIM", "Δ PSNR vs identity (dB)", "grid (dB)",
            "s/step (median)"]
    if with_fid:
        head += ["FID" + (" (RANDOM Inception: not FID)" if random_fid else ""), "KID"]
    blank = [""] * (len(head) - 4)
    rows = [head, ["---"] * len(head)]
    if reports:
        i = reports[0]["identity"]
        rows.append(["identity (input photo)", "", "", "", f"{i['psnr']:.2f}", f"{i['ssim']:.4f}", "0",
                     f"{i.get('grid_db', float('nan')):+.2f}", ""] + (["", ""] if with_fid else []))
    for name, rs in groups.items():
        overrides = " ".join(recipes.get(name, [])) or "(none)"
        if not rs:
            rows.append([name, overrides, "failed", "", *blank])
            continue
        steps = sorted({r["steps"] for r in rs})
        row = [name, overrides, " ".join(str(r["seed"]) for r in rs), "/".join(map(str, steps)),
               _mean_std([r["model"]["psnr"] for r in rs], 2), _mean_std([r["model"]["ssim"] for r in rs], 4),
               _mean_std([r["delta_psnr"] for r in rs], 2, signed=True),
               _mean_std([r["model"].get("grid_db") for r in rs], 2, signed=True),
               _mean_std([r["seconds_per_step_median"] for r in rs], 3)]
        if with_fid:
            row += [_mean_std([r["fid"].get("fid") for r in rs], 1),
                    _mean_std([r["fid"].get("kid_mean") for r in rs], 4)]
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def summary_rows(groups: dict[str, list[dict]]) -> dict[str, dict]:
    """Per recipe: Δ PSNR vs identity per painter (mean over seeds), their mean over painters, and the std
    across seeds of that mean (seeds that ran on every painter)."""
    out = {}
    for name, rs in groups.items():
        by_painter: dict[str, list[dict]] = {}
        for r in rs:
            by_painter.setdefault(r.get("painter", "colour"), []).append(r)
        per_painter = {p: float(np.mean([r["delta_psnr"] for r in prs])) for p, prs in by_painter.items()}
        seeds = set.intersection(*({r["seed"] for r in prs} for prs in by_painter.values())) if by_painter else set()
        per_seed = [np.mean([r["delta_psnr"] for prs in by_painter.values() for r in prs if r["seed"] == s])
                    for s in sorted(seeds)]
        out[name] = {"per_painter": per_painter, "mean": float(np.mean(list(per_painter.values()))) if rs else None,
                     "seed_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
                     "grid_db": float(np.mean([r["model"].get("grid_db", np.nan) for r in rs])) if rs else None,
                     "ssim": float(np.mean([r["model"]["ssim"] for r in rs])) if rs else None}
    return out


def format_comparison(groups: dict[str, list[dict]], recipes: dict[str, list[str]]) -> str:
    """Markdown: a summary (one row per recipe: Δ PSNR vs identity per painter, mean over seeds, and the mean
    over painters ± the std across seeds), then one detailed table per painter (mean ± sample std across
    seeds, the identity baseline first)."""
    seen = {r.get("painter", "colour") for rs in groups.values() for r in rs}
    painters_seen = [p for p in PAINTERS if p in seen] + sorted(seen - set(PAINTERS))
    summary = summary_rows(groups)
    # Overrides every recipe shares are stated once, above the table; the rows show what differs.
    shared = [o for o in next(iter(recipes.values()), []) if all(o in rs for rs in recipes.values())] if recipes else []
    recipes = {name: [o for o in rs if o not in shared] for name, rs in recipes.items()}
    head = ["recipe", "overrides", *[f"{p} Δ dB" for p in painters_seen], "mean Δ dB", "SSIM (mean)", "grid (dB)"]
    rows = [head, ["---"] * len(head)]
    for name, row in summary.items():
        overrides = " ".join(recipes.get(name, [])) or "(none)"
        if row["mean"] is None:
            rows.append([name, overrides, *["failed"] * len(painters_seen), "", "", ""])
            continue
        mean = f"{row['mean']:+.2f}" + (f" ± {row['seed_std']:.2f}" if row["seed_std"] is not None else "")
        if set(row["per_painter"]) != set(painters_seen):
            mean = "n/a (not every painter)"  # a mean over other painters than the other rows' is no comparison
        rows.append([name, overrides, *[f"{row['per_painter'][p]:+.2f}" if p in row["per_painter"] else "n/a"
                                        for p in painters_seen],
                     mean, f"{row['ssim']:.4f}", f"{row['grid_db']:+.2f}"])
    parts = [f"every recipe: {' '.join(shared)}"] if shared else []
    parts.append("\n".join("| " + " | ".join(r) + " |" for r in rows))
    for painter in painters_seen:
        per = {name: [r for r in rs if r.get("painter", "colour") == painter] for name, rs in groups.items()}
        parts.append(f"painter {painter}:\n\n" + _painter_table(per, recipes))
    return "\n\n".join(parts)


def write_figure(reports: Sequence[dict], path: str | Path, n_images: int = 3, scale: int = 2) -> Path:
    """A PNG of what the runs learned: per report (one painter each), ``n_images`` test photos as rows of
    photo | translation | true painting, the painters side by side; images enlarged ``scale`` x (nearest)."""
    from PIL import Image

    columns = []
    for report in reports:
        bench, translated = Path(report["benchmark"]["dir"]), Path(report["translations"])
        names = sorted(p.name for p in translated.glob("*.png"))
        names = [names[i * len(names) // n_images] for i in range(min(n_images, len(names)))]  # spread over photos
        rows = [np.concatenate([read_rgb(bench / "testA" / f), read_rgb(translated / f),
                                read_rgb(bench / "testA_painted" / f)], axis=1) for f in names]
        columns.append(np.concatenate(rows, axis=0))
    gap = np.full((columns[0].shape[0], 8, 3), 255, np.uint8)
    grid = np.concatenate([c for col in columns for c in (col, gap)][:-1], axis=1)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


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
