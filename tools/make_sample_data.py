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
  through ``cyclestyle.painters.colour``, a fixed, deterministic, non-neural painting filter
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
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an installed package
    sys.path.insert(0, str(ROOT))

from cyclestyle.painters import colour as paint  # noqa: E402  (the sample data's painter)
from cyclestyle.quality import (  # noqa: E402
    load_photo,
    random_box as _random_box,  # noqa: E402
    split_counts,
)

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


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of 35-70% of the shorter side, resized to ``size`` x ``size``."""
    top, left, side = _random_box(*image.shape[:2], rng, CROP_FRACTION)
    crop = image[top:top + side, left:left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def save_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 array as a JPEG of quality ``JPEG_QUALITY``."""
    ok = cv2.imwrite(str(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not write {path}")


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
