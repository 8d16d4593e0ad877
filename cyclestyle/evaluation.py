"""FID and KID between image folders, and of a trained generator on a test set.

The engine is torch-fidelity: its port of the TF-reference Inception (``inception-v3-compat``, pool3
features, TF1.x-compatible bilinear resize to 299x299 with no antialiasing, the standard weights file),
its Fréchet distance from feature statistics and its KID estimator (mean and std over random subsets).
What this module adds is the plumbing around it:

- images are found and decoded by ``cyclestyle.data`` (any depth, any mode as 8-bit RGB, EXIF applied);
  unreadable files are skipped and counted, images of any size mix freely (batched by equal size);
- the features of a folder are cached on disk, keyed by the content of its files and by the protocol
  (extractor, weights hash, layer, resize), so repeated evaluations against one test set are fast and a
  changed file or weights file can never hit a stale entry;
- the weights come from a local file (``--inception-weights`` / ``CYCLESTYLE_INCEPTION_WEIGHTS``) or
  torch hub's cache; missing and undownloadable, one message says which file to put where;
- any torch-fidelity ``FeatureExtractorBase`` can stand in for Inception (the tests use a tiny random
  one), through the same code path.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cyclestyle.data import DataError, ImageReadError, find_images, load_image, scan_folder

LIBRARY = "torch-fidelity"
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_LAYER = "2048"  # pool3: the layer FID and KID are defined on
INCEPTION_SIZE = 299
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_RESIZE = ("bilinear to 299x299, TF1.x-compatible, no antialiasing "
                    "(torch-fidelity interpolate_bilinear_2d_like_tensorflow1x)")
IMAGE_DECODE = "cyclestyle.data.load_image: PIL, 8-bit RGB, EXIF orientation applied, alpha composited on white"
WEIGHTS_ENV = "CYCLESTYLE_INCEPTION_WEIGHTS"
CACHE_ENV = "CYCLESTYLE_FID_CACHE"
CACHE_FORMAT = 1
STATS_FORMAT = "cyclestyle-fid-features"
MAX_BATCH_PIXELS = 1 << 24  # per feature batch (64 MB as float32 per channel): one 24 Mpx photo, 256 at 256 px
KID_SEED = 2020  # torch-fidelity's default: the subsets drawn, hence KID, are reproducible


class EvaluationError(ValueError):
    """Evaluation cannot run as asked (weights, stats file, too few images); the message says what to do."""


def _library_version() -> str:
    import torch_fidelity

    return torch_fidelity.__version__


def inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def hub_weights_path() -> Path:
    """Where torch hub (and so torch-fidelity) looks for the Inception weights before downloading them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _missing_message(cause: str) -> str:
    return (f"the FID Inception weights could not be loaded ({cause}). Download {inception_url()} on a machine "
            f"with internet and put it at {hub_weights_path()}, or anywhere and pass --inception-weights "
            f"/path/to/{INCEPTION_FILE} (or set {WEIGHTS_ENV}=/path/to/{INCEPTION_FILE}).")


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime): the 95 MB weights file is hashed once a process."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256_MEMO[key] = digest.hexdigest()
    return _SHA256_MEMO[key]


@dataclass
class Extractor:
    """A torch-fidelity feature extractor plus what a reader needs to reproduce its numbers.

    ``net(uint8 images (N, 3, H, W))`` returns a tuple whose first item is (N, feature_dim) features;
    resizing to the network's input size happens inside it.
    """

    net: nn.Module
    name: str
    feature_layer: str
    feature_dim: int
    input_size: int | None
    resize: str
    weights_path: str | None
    weights_sha256: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def protocol(self) -> dict:
        """Everything the features depend on besides the images: the cache key, and the JSON report."""
        return {"library": LIBRARY, "library_version": _library_version(), "feature_extractor": self.name,
                "feature_layer": self.feature_layer, "feature_dim": self.feature_dim,
                "inception_input_size": self.input_size, "resize": self.resize,
                "weights_sha256": self.weights_sha256, "image_decode": IMAGE_DECODE}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = self.net(images.to(self.device))
        return out[0].float().cpu().numpy()


def resolve_weights(weights: str | None = None) -> str:
    """The Inception weights to use: ``weights`` (a file or ``random``), else $CYCLESTYLE_INCEPTION_WEIGHTS,
    else torch hub's cached file, downloaded there first if it is missing (needs internet)."""
    weights = weights or os.environ.get(WEIGHTS_ENV) or None
    if weights == "random":
        return weights
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EvaluationError(_missing_message(f"--inception-weights / {WEIGHTS_ENV} file not found: {path}"))
        return str(path)
    path = hub_weights_path()
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(inception_url(), str(path), progress=False)
        except Exception as err:  # URLError offline, HTTPError, disk full, read-only cache folder...
            raise EvaluationError(_missing_message(f"{path} is missing and the download failed: "
                                                   f"{type(err).__name__}: {err}")) from None
    return str(path)


def load_inception(weights: str | None = None, device: str = "auto") -> Extractor:
    """torch-fidelity's TF-reference Inception (pool3, 2048-d) with weights per :func:`resolve_weights`.

    ``weights="random"``: the same architecture, kaiming-initialised (timing and plumbing tests only; the
    numbers it gives are not FID and are labelled so in every report).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    resolved = resolve_weights(weights)
    from cyclestyle.devices import resolve_device  # one device rule for every command

    dev = resolve_device(device)
    if resolved == "random":
        net, sha, name = _random_inception([INCEPTION_LAYER]), "random-kaiming-seed0", f"{INCEPTION_NAME} (RANDOM)"
    else:
        # torch-fidelity unpickles the file with weights_only=False: vet it first, so that a crafted file
        # cannot run code, and so that a wrong file gets a message naming it.
        try:
            torch.load(resolved, map_location="cpu", weights_only=True)
        except Exception as err:
            raise EvaluationError(f"Inception weights file {resolved} is not a plain state_dict file "
                                  f"({str(err).splitlines()[0]}); it was not used. {_missing_message('bad file')}"
                                  ) from None
        try:
            net = FeatureExtractorInceptionV3(INCEPTION_NAME, [INCEPTION_LAYER],
                                              feature_extractor_weights_path=resolved)
        except RuntimeError as err:
            raise EvaluationError(f"Inception weights file {resolved} does not hold torch-fidelity's Inception "
                                  f"weights ({str(err).splitlines()[0]}); expected {INCEPTION_FILE}") from None
        sha, name = file_sha256(resolved), INCEPTION_NAME
    return Extractor(net.to(dev).eval(), name, INCEPTION_LAYER, 2048, INCEPTION_SIZE, INCEPTION_RESIZE, resolved,
                     sha, dev)


def _random_inception(features_list: list[str]) -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInceptionV3(FeatureExtractorInceptionV3):
        """The real architecture, kaiming-initialised instead of loaded (PyTorch's default init makes the
        pool3 features collapse to ~1e-8 after 90 layers). Seeded: the same weights every time."""

        def __init__(self, features_list):
            empty = io.BytesIO()
            torch.save({}, empty)  # the parent constructor insists on loading something
            empty.seek(0)
            super().__init__(INCEPTION_NAME, features_list, feature_extractor_weights_path=empty)

        def load_state_dict(self, state_dict, strict=True, assign=False):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                for m in self.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    elif isinstance(m, nn.BatchNorm2d):
                        nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
                        m.running_mean.zero_(), m.running_var.fill_(1.0)
            return nn.modules.module._IncompatibleKeys([], [])

    return RandomInceptionV3(features_list)


def load_extractor(weights: str | None = None, device: str = "auto") -> Extractor:
    """The feature extractor the commands use (a seam for tests to put a tiny one in)."""
    return load_inception(weights, device)


# --- features of images ----------------------------------------------------------------------------------


def extract_features(files: Sequence[Path], extractor: Extractor, batch_size: int = 32,
                     progress: bool = False) -> tuple[np.ndarray, list[tuple[Path, str]], list[int]]:
    """Features of ``files``: (features (N, D) float32, skipped (file, why), index in ``files`` of each row).

    Files that fail to decode are skipped. Images of equal size go through together, in whatever order
    they come (mixed sizes are fine: the extractor resizes each batch to its input size itself).
    """
    from tqdm.auto import tqdm

    rows: list[np.ndarray] = []
    used: list[int] = []
    skipped: list[tuple[Path, str]] = []
    buckets: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    pixels = lambda shape: len(buckets.get(shape, ())) * shape[1] * shape[2]  # noqa: E731

    bar = tqdm(total=len(files), disable=not progress, unit="img", dynamic_ncols=True, desc="features")

    def flush(shape):
        batch = buckets.pop(shape)
        rows.append(extractor(torch.stack([x for _, x in batch])))
        used.extend(i for i, _ in batch)
        bar.update(len(batch))

    for index, path in enumerate(files):
        try:
            x = torch.from_numpy(np.array(load_image(path), dtype=np.uint8)).permute(2, 0, 1)
        except ImageReadError as err:
            skipped.append((Path(path), str(err)))
            bar.update(1)
            continue
        shape = tuple(x.shape)
        buckets.setdefault(shape, []).append((index, x))
        # Big photos go in smaller batches: the extractor works in float32 on the full-size batch first.
        if len(buckets[shape]) >= batch_size or pixels(shape) >= MAX_BATCH_PIXELS:
            flush(shape)
        if sum(pixels(k) for k in buckets) >= 4 * MAX_BATCH_PIXELS:  # many sizes: bound the memory held
            flush(max(buckets, key=pixels))
    while buckets:
        flush(next(iter(buckets)))
    bar.close()
    order = np.argsort(used, kind="stable")  # back to the order of ``files``
    features = np.concatenate(rows)[order] if rows else np.zeros((0, extractor.feature_dim), np.float32)
    return features.astype(np.float32), skipped, [used[i] for i in order]


@dataclass
class FolderFeatures:
    """The features of one side of a comparison, and where they came from."""

    source: str  # the folder or stats file
    features: np.ndarray  # (N, D) float32, rows ordered by file content (independent of names and order)
    skipped: list[tuple[str, str]]  # (file relative to the folder, why)
    cache_file: str | None = None
    cache_hit: bool = False

    @property
    def n(self) -> int:
        return len(self.features)


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cyclestyle" / "fid-features"


def _content_hash(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as err:  # a symlink loop or unreadable file: skipped later, keyed by why
        return "unreadable:" + hashlib.sha256(str(err).encode()).hexdigest()


def folder_cache_key(files: Sequence[Path], protocol: dict) -> str:
    """sha256 of the protocol and the sorted content hashes of the files: names, order and place don't matter."""
    digest = hashlib.sha256(json.dumps({"cache_format": CACHE_FORMAT, **protocol}, sort_keys=True).encode())
    for h in sorted(_content_hash(p) for p in files):
        digest.update(h.encode())
    return digest.hexdigest()


def folder_features(folder: str | Path, extractor: Extractor, cache_dir: str | Path | None = None,
                    label: str = "folder", batch_size: int = 32, progress: bool = False) -> FolderFeatures:
    """Features of every readable image under ``folder``, from the cache when its content was seen before.

    ``cache_dir=None`` disables the cache. Unreadable files are skipped and counted (and cached as such).
    """
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{label} folder not found: {root}")
    candidates = find_images(root)
    hashes = {p: _content_hash(p) for p in candidates}
    cache_file = None
    if cache_dir is not None:
        key = folder_cache_key(candidates, extractor.protocol())
        cache_file = Path(cache_dir).expanduser() / f"{key[:40]}.npz"
        if cache_file.is_file():
            try:
                cached = read_stats_file(cache_file)
                return FolderFeatures(str(root), cached.features, cached.skipped, str(cache_file), True)
            except EvaluationError as err:
                warnings.warn(f"ignoring a damaged cache entry ({err}); recomputing", stacklevel=2)
    scan = scan_folder(root, label)  # header check: raises if nothing readable is left
    features, decode_skipped, used = extract_features(scan.files, extractor, batch_size, progress)
    if decode_skipped:
        warnings.warn(f"{label} {root}: skipped {len(decode_skipped)} file(s) that failed to decode "
                      f"(e.g. {decode_skipped[0][1]})", stacklevel=2)
    order = sorted(range(len(used)), key=lambda i: hashes[scan.files[used[i]]])
    features = features[order]
    skipped = sorted((str(p.relative_to(root)), why) for p, why in [*scan.skipped, *decode_skipped])
    result = FolderFeatures(str(root), features, skipped, str(cache_file) if cache_file else None, False)
    if cache_file is not None:
        try:
            write_stats_file(cache_file, result, extractor.protocol())
        except OSError as err:  # read-only or full cache folder: the cache is only a shortcut
            warnings.warn(f"could not write the feature cache {cache_file} ({err}); continuing without it",
                          stacklevel=2)
            result.cache_file = None
    return result


def write_stats_file(path: str | Path, side: FolderFeatures, protocol: dict) -> Path:
    """Save features with their protocol and provenance as .npz (no pickles); atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": STATS_FORMAT, "cache_format": CACHE_FORMAT, "protocol": protocol, "source": side.source,
            "skipped": side.skipped, "created": _now()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, features=side.features, meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)  # concurrent evaluations of one folder: each rename is whole
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_stats_file(path: str | Path, protocol: dict | None = None) -> FolderFeatures:
    """Load a stats file written by :func:`write_stats_file`; with ``protocol``, refuse one made otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            features = np.asarray(data["features"], dtype=np.float32)
            meta = json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EvaluationError(f"{path} is not a readable cyclestyle feature file ({err}); pass a folder of "
                              "images or a .npz written by cyclestyle") from None
    if meta.get("format") != STATS_FORMAT:
        raise EvaluationError(f"{path} is not a cyclestyle feature file (format {meta.get('format')!r})")
    if protocol is not None:
        differs = sorted(k for k in set(protocol) | set(meta["protocol"])
                         if k != "library_version" and protocol.get(k) != meta["protocol"].get(k))
        if differs:
            diff = "; ".join(f"{k}: file {meta['protocol'].get(k)!r}, now {protocol.get(k)!r}" for k in differs)
            raise EvaluationError(f"{path} was computed with another protocol ({diff}); its numbers would not be "
                                  "comparable. Recompute it from the image folder")
    return FolderFeatures(str(path), features, [tuple(s) for s in meta.get("skipped", [])], str(path), True)


def load_side(path: str | Path, extractor: Extractor, cache_dir: str | Path | None, label: str,
              batch_size: int = 32, progress: bool = False) -> FolderFeatures:
    """A folder of images, or a .npz feature file (checked against the extractor's protocol)."""
    path = Path(path).expanduser().absolute()
    if path.is_file() and path.suffix == ".npz":
        return read_stats_file(path, extractor.protocol())
    if not path.exists():
        raise DataError(f"{label}: {path} does not exist (pass a folder of images or a .npz feature file)")
    return folder_features(path, extractor, cache_dir, label, batch_size, progress)


# --- the metrics -----------------------------------------------------------------------------------------


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of (N, D) features: what FID compares."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        raise EvaluationError(f"FID needs at least 2 images on each side, got {len(features)}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), by torch-fidelity's TTUR-derived implementation."""
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    as64 = lambda a: np.atleast_1d(np.asarray(a, dtype=np.float64))  # noqa: E731
    stat1 = {"mu": as64(mu1), "sigma": np.atleast_2d(as64(sigma1))}
    stat2 = {"mu": as64(mu2), "sigma": np.atleast_2d(as64(sigma2))}
    # One BLAS thread: OpenBLAS's multi-threaded eigvals of a 2048x2048 matrix took 32 s instead of 2.6 s
    # on 2 cores shared with other work (and gains little when the CPU is idle).
    with threadpool_limits(1, user_api="blas"):
        return float(fid_statistics_to_metric(stat1, stat2, verbose=False)[KEY_METRIC_FID])


def kid(features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = KID_SEED) -> dict:
    """KID (unbiased MMD^2, cubic polynomial kernel) over ``subsets`` random subsets, by torch-fidelity.

    The subset size is capped at the smaller side; the one used is reported as ``kid_subset_size``.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise EvaluationError(f"KID needs at least 2 images on each side, got {len(features1)} and {len(features2)}")
    out = kid_features_to_metric(torch.from_numpy(np.asarray(features1, np.float32)),
                                 torch.from_numpy(np.asarray(features2, np.float32)),
                                 kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"kid_mean": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD], "kid_subsets": subsets,
            "kid_subset_size": size, "kid_seed": seed, "kid_kernel": "poly, degree 3, gamma 1/D, coef0 1"}


def metrics(side1: FolderFeatures, side2: FolderFeatures, kid_subsets: int = 100,
            kid_subset_size: int = 1000) -> dict:
    """FID and KID between two sets of features."""
    mu1, sigma1 = statistics(side1.features)
    mu2, sigma2 = statistics(side2.features)
    return {"fid": frechet_distance(mu1, sigma1, mu2, sigma2),
            **kid(side1.features, side2.features, kid_subsets, kid_subset_size)}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _provenance(extractor: Extractor) -> dict:
    from cyclestyle import __version__

    return {**extractor.protocol(), "weights_path": extractor.weights_path, "timestamp": _now(),
            "cyclestyle_version": __version__}


def compare_folders(path1: str | Path, path2: str | Path, extractor: Extractor | None = None,
                    weights: str | None = None, cache_dir: str | Path | None = None, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, batch_size: int = 32, device: str = "auto",
                    progress: bool = False) -> dict:
    """FID and KID between two folders (or .npz feature files); a flat dict with every figure and the protocol."""
    for label, path in (("first", path1), ("second", path2)):
        if not Path(path).expanduser().exists():
            raise DataError(f"{label} path not found: {path} (pass a folder of images or a .npz feature file)")
    extractor = extractor or load_extractor(weights, device)
    started = time.perf_counter()
    side1 = load_side(path1, extractor, cache_dir, "first folder", batch_size, progress)
    side2 = load_side(path2, extractor, cache_dir, "second folder", batch_size, progress)
    figures = metrics(side1, side2, kid_subsets, kid_subset_size)
    return {"direction": None, **figures, "n_1": side1.n, "n_2": side2.n, "path_1": side1.source,
            "path_2": side2.source, "skipped_1": side1.skipped, "skipped_2": side2.skipped,
            "features_file_1": side1.cache_file, "features_file_2": side2.cache_file,
            "cache_hit_1": side1.cache_hit, "cache_hit_2": side2.cache_hit,
            "seconds": round(time.perf_counter() - started, 3), **_provenance(extractor)}


def default_output_dir(checkpoint: str | Path) -> Path:
    """Where ``evaluate`` writes by default: RUN_DIR/eval, or EXPORT-eval/ beside an export file."""
    path = Path(checkpoint)
    return path / "eval" if path.is_dir() else path.with_name(f"{path.stem}-eval")


def evaluate_checkpoint(checkpoint: str | Path, test_a: str | Path, test_b: str | Path, direction: str = "both",
                        output_dir: str | Path | None = None, json_path: str | Path | None = None,
                        extractor: Extractor | None = None, weights: str | None = None,
                        cache_dir: str | Path | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                        batch_size: int = 32, device: str = "auto", progress: bool = False,
                        checkpoint_b: str | Path | None = None) -> list[dict]:
    """Translate the test images of each direction (PNG) and compare them with the other domain's test images.

    a2b: test_a translated vs test_b; b2a: test_b translated vs test_a. The real test sets' features are
    cached. Writes the translations to ``output_dir/<direction>/`` and every figure to ``json_path``
    (default ``output_dir/metrics.json``); returns one record per direction.
    """
    from cyclestyle.translate import Translator

    if direction not in ("both", "a2b", "b2a"):
        raise EvaluationError(f"--direction must be both, a2b or b2a, got {direction!r}")
    test_a, test_b = Path(test_a).expanduser(), Path(test_b).expanduser()
    for label, folder in (("--test-a", test_a), ("--test-b", test_b)):
        if not folder.is_dir():
            raise DataError(f"{label} folder not found: {folder}")
    out_root = Path(output_dir) if output_dir else default_output_dir(checkpoint)
    # Generators first: a wrong checkpoint fails in a second, before Inception is loaded.
    translators = {d: Translator.load(checkpoint, direction=d, device=device, precision="fp32", path_b=checkpoint_b)
                   for d in (("a2b", "b2a") if direction == "both" else (direction,))}
    extractor = extractor or load_extractor(weights, device)
    records = []
    for d, translator in translators.items():
        source, reference = (test_a, test_b) if d == "a2b" else (test_b, test_a)
        generated_dir = out_root / d
        summary = translator.translate_folder(source, generated_dir, fmt="png", overwrite=True)
        bad_inputs = {Path(p) for p, _ in summary.skipped}
        # The files written now, not a scan of the output folder: leftovers of an earlier evaluation with
        # other test images must not count. PNG, never JPEG: compression artefacts shift FID.
        generated = sorted({generated_dir / p.relative_to(source).with_suffix(".png")
                            for p in find_images(source) if p not in bad_inputs})
        missing = [p for p in generated if not p.is_file()]
        if missing:
            raise EvaluationError(f"the translator did not write {missing[0]} (and {len(missing) - 1} more)")
        started = time.perf_counter()
        features, gen_skipped, _ = extract_features(generated, extractor, batch_size, progress)
        gen_side = FolderFeatures(str(generated_dir), features, [(str(p), why) for p, why in gen_skipped])
        ref_side = folder_features(reference, extractor, cache_dir, f"--test-{d[-1]}", batch_size, progress)
        figures = metrics(gen_side, ref_side, kid_subsets, kid_subset_size)
        records.append({
            "direction": d, **figures, "n_generated": gen_side.n, "n_reference": ref_side.n,
            "checkpoint": _abs(checkpoint), "checkpoint_step": _int_or_none(translator.meta.get("step")),
            "checkpoint_ema": translator.meta.get("ema") == "true", "test_a": _abs(test_a), "test_b": _abs(test_b),
            "source_dir": _abs(source), "generated_dir": _abs(generated_dir), "reference_dir": _abs(reference),
            "generated_format": "png", "n_source_skipped": len(summary.skipped),
            "source_skipped": [(str(p), why) for p, why in summary.skipped],
            "reference_skipped": ref_side.skipped, "reference_features_file": ref_side.cache_file,
            "reference_cache_hit": ref_side.cache_hit, "seconds_translate": round(summary.seconds, 3),
            "seconds_metrics": round(time.perf_counter() - started, 3), **_provenance(extractor)})
    write_report(records, Path(json_path) if json_path else out_root / "metrics.json")
    return records


def _abs(path: str | Path) -> str:
    return str(Path(path).expanduser().absolute())


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def write_report(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"results": records}, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def format_metrics(records: list[dict]) -> str:
    """A readable table of the records, then the protocol line that makes the numbers reproducible."""
    lines = [f"{'direction':<10} {'FID':>10} {'KID x 1e3 (mean ± std)':>24} {'N':>13}"]
    for r in records:
        n = f"{r.get('n_generated', r.get('n_1'))} vs {r.get('n_reference', r.get('n_2'))}"
        kid_text = f"{r['kid_mean'] * 1e3:.3f} ± {r['kid_std'] * 1e3:.3f}"
        lines.append(f"{r['direction'] or '1 vs 2':<10} {r['fid']:>10.3f} {kid_text:>24} {n:>13}")
    r = records[0]
    lines.append(f"features: {r['library']} {r['library_version']} {r['feature_extractor']}, layer "
                 f"{r['feature_layer']} ({r['feature_dim']}-d), {r['resize'].split(' (')[0]}; "
                 f"KID: {r['kid_subsets']} subsets of {r['kid_subset_size']}")
    lines.append(f"weights: {r['weights_path']} (sha256 {r['weights_sha256'][:16]}...)")
    if r["weights_path"] == "random":
        lines.append("WARNING: randomly initialised Inception: these numbers are NOT FID/KID (timing and tests only)")
    return "\n".join(lines)
