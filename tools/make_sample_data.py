"""Build the small bundled sample dataset ``data/sample`` for cyclestyle.

The sample dataset lets anyone try cyclestyle (smoke tests, a first short training
run, the documentation examples) without downloading anything. It is made entirely
offline from colour photographs that ship inside the scikit-image wheel
(``skimage.data``; only images bundled in the wheel are used, never those that
scikit-image would fetch with pooch), so the exact same files can be rebuilt on any
machine with ``python tools/make_sample_data.py``.

The photographs are split into two disjoint groups so that the two domains never
share image content, as in a real unpaired problem:

* domain A, "photos": random square crops of the group-A photographs, unmodified;
* domain B, "paintings": random square crops of the group-B photographs passed
  through :func:`paint`, a fixed, deterministic, non-neural painting filter
  (edge-preserving smoothing, posterisation, a warm colour grade and darkened
  edges), so that B differs from A in both texture and colour statistics.

Each crop has a random side of 35-70% of the photo's shorter side at a random
position, is resized to ``--size`` pixels square and saved as JPEG (quality 90)
named ``<source>_<nnn>.jpg``; numbers run on per source across train and test, so
every name is unique in the whole dataset. The layout follows the reference
CycleGAN datasets::

    <output>/trainA/         --n-train crops from the group-A photos
    <output>/trainB/         --n-train painted crops from the group-B photos
    <output>/testA/          --n-test further crops from the group-A photos
    <output>/testB/          --n-test further painted crops from the group-B photos
    <output>/testA_painted/  paint() of each testA crop, same file names

``testA_painted`` is a ground truth for A->B: it is what the painting filter makes
of each test photo (paint is applied to the same in-memory crop that was saved as
testA, before JPEG compression), so a translator's output can be scored against it.

Everything is drawn from one numpy RNG seeded with ``--seed``, so the output is
reproducible. Existing generated ``*.jpg`` files in the output folders are deleted
first, so the folder is always overwritten cleanly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

# Colour photographs bundled in the scikit-image wheel (no download needed), with
# their licences as given in the skimage.data docstrings. ``chelsea`` and ``cat`` are
# the same photo, so only one name is listed.
#   astronaut: NASA, public domain        coffee:  CC0 (Rachel Michetti)
#   chelsea:   CC0 (Stefan van der Walt)  rocket:  SpaceX, public domain
GROUP_A = ("astronaut", "coffee")  # domain A: photos
GROUP_B = ("chelsea", "rocket")  # domain B: paintings
assert not set(GROUP_A) & set(GROUP_B), "the two groups of photos must be disjoint"

CROP_FRACTION = (0.35, 0.70)  # crop side as a fraction of the photo's shorter side
JPEG_QUALITY = 90
SUBDIRS = ("trainA", "trainB", "testA", "testB", "testA_painted")


def load_photo(name: str) -> np.ndarray:
    """Return the skimage.data photograph ``name`` as an RGB uint8 array (H, W, 3)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        raise TypeError(f"skimage.data.{name} is {image.dtype}, expected uint8")
    return np.ascontiguousarray(image)


def random_box(height: int, width: int, rng: np.random.Generator,
               fraction: tuple[float, float] = CROP_FRACTION) -> tuple[int, int, int]:
    """A random square ``(top, left, side)`` inside a ``height`` x ``width`` image, its side a uniform
    ``fraction`` of the shorter side (also used by ``cyclestyle.quality``, which records the boxes)."""
    side = int(round(min(height, width) * rng.uniform(*fraction)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return top, left, side


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of 35-70% of the shorter side, resized to ``size`` x ``size``."""
    top, left, side = random_box(*image.shape[:2], rng)
    crop = image[top:top + side, left:left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def paint(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """Render an RGB uint8 image as a flat, warm "painting"; returns RGB uint8 of the same shape.

    A fixed, deterministic, non-neural filter (no randomness, no learned weights), so
    the same input always gives the same output. Its steps, tuned for images of
    about 128 pixels:

    1. edge-preserving smoothing (three bilateral filters) removes fine texture and
       noise but keeps object borders sharp;
    2. posterisation in CIELAB: lightness is quantised to steps of 20 (flat patches
       of paint with visible borders between them) while the colour axes a and b are
       boosted by 30% and quantised finely, so hues are kept;
    3. a warm colour grade: a and b are shifted towards red and yellow, shadows are
       lifted and highlights compressed (lightness 20 + 0.85 L), like old varnish;
    4. edges, from the Sobel gradient of the smoothed image, are darkened by up to
       50% like painted outlines.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    smooth = np.ascontiguousarray(image)

    # 1. Edge-preserving smoothing.
    for _ in range(3):
        smooth = cv2.bilateralFilter(smooth, d=7, sigmaColor=35, sigmaSpace=5)

    # 2. Posterisation in CIELAB (OpenCV's 8-bit scaling: L in 0..255, a and b offset by 128).
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness = np.round(lab[..., 0] / 20.0) * 20.0
    a = np.round((lab[..., 1] - 128.0) * 1.3 / 6.0) * 6.0
    b = np.round((lab[..., 2] - 128.0) * 1.3 / 6.0) * 6.0

    # 3. Warm colour grade.
    lightness = 20.0 + 0.85 * lightness
    a = a + 128.0 + 4.0
    b = b + 128.0 + 26.0
    lab = np.clip(np.round(np.stack([lightness, a, b], axis=-1)), 0, 255).astype(np.uint8)
    graded = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32)

    # 4. Darken edges.
    gray = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    edges = np.clip((np.hypot(gx, gy) - 50.0) / 250.0, 0.0, 1.0)
    edges = cv2.GaussianBlur(edges, (3, 3), 0.8)
    out = graded * (1.0 - 0.5 * edges)[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 array as a JPEG of quality ``JPEG_QUALITY``."""
    ok = cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not write {path}")


def split_counts(total: int, n_sources: int) -> list[int]:
    """Share ``total`` images among ``n_sources`` photos as evenly as possible."""
    return [total // n_sources + (1 if i < total % n_sources else 0) for i in range(n_sources)]


def clean(output: Path) -> None:
    """Create the output folders and delete the ``*.jpg`` files a previous run left in them."""
    for sub in SUBDIRS:
        folder = output / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()


def build(output: Path, size: int, seed: int, n_train: int, n_test: int) -> dict[str, int]:
    """Write the whole dataset under ``output``; return the number of files per folder."""
    cv2.setNumThreads(1)  # keep OpenCV's filters strictly reproducible
    rng = np.random.default_rng(seed)
    clean(output)
    counts = dict.fromkeys(SUBDIRS, 0)
    for domain, sources in (("A", GROUP_A), ("B", GROUP_B)):
        train_counts = split_counts(n_train, len(sources))
        test_counts = split_counts(n_test, len(sources))
        for source, k_train, k_test in zip(sources, train_counts, test_counts):
            photo = load_photo(source)
            for index in range(k_train + k_test):
                split = "train" if index < k_train else "test"
                name = f"{source}_{index:03d}.jpg"
                crop = random_crop(photo, size, rng)
                if domain == "A":
                    save_jpeg(output / f"{split}A" / name, crop)
                    counts[f"{split}A"] += 1
                    if split == "test":
                        save_jpeg(output / "testA_painted" / name, paint(crop))
                        counts["testA_painted"] += 1
                else:
                    save_jpeg(output / f"{split}B" / name, paint(crop))
                    counts[f"{split}B"] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("data/sample"),
                        help="folder to (re)create the dataset in")
    parser.add_argument("--size", type=int, default=128, help="side of the square images, pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the numpy RNG that draws the crops")
    parser.add_argument("--n-train", type=int, default=40, help="images in each of trainA and trainB")
    parser.add_argument("--n-test", type=int, default=10, help="images in each of testA and testB")
    args = parser.parse_args(argv)
    if args.size < 8 or args.n_train < 0 or args.n_test < 0:
        parser.error("--size must be at least 8 and the counts must not be negative")

    counts = build(args.output, args.size, args.seed, args.n_train, args.n_test)
    total_bytes = 0
    print(f"photos A: {', '.join(GROUP_A)}; photos B (painted): {', '.join(GROUP_B)}")
    for sub in SUBDIRS:
        nbytes = sum(p.stat().st_size for p in (args.output / sub).glob("*.jpg"))
        total_bytes += nbytes
        print(f"{args.output / sub}: {counts[sub]} images, {nbytes} bytes")
    print(f"total: {sum(counts.values())} images, {total_bytes} bytes")


if __name__ == "__main__":
    main()
