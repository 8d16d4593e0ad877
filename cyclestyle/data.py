"""Unpaired image folders: finding and decoding images, augmentation, and a resumable sample stream.

Sampling is addressed by position: the sample at global position ``p`` of the stream is a pure function
of ``(seed, p)`` -- which A image, which B image (each domain shuffled per its own epoch) and the
augmentation seed. That gives three properties without bookkeeping: resuming at step ``s`` replays
exactly the stream an uninterrupted run would have seen; DataLoader workers cannot repeat each other's
random crops; and the result does not depend on the number of workers.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise checks PyPI on import

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """A problem with the user's image folders; the message names the folder."""


class ImageReadError(OSError):
    """One image could not be decoded; the message names the file and why."""


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode any supported image as 8-bit RGB, EXIF orientation applied.

    Grayscale, palette, RGBA (composited on white), CMYK and 16-bit images are converted.
    ``draft_size`` is the size the image will next be resized to (``data.load_size``): JPEGs are then
    decoded at the smallest 1/2^k scale whose shorter side is still at least twice that, which makes
    large photos several times cheaper to load for small crops.
    """
    try:
        with Image.open(path) as img:
            if draft_size and img.format == "JPEG":
                # Only down to 2x: the antialiased resize of build_transform must do the last shrink, as
                # it does for every other format. Drafting to 1x leaves it to libjpeg's DCT scaler, whose
                # result is softer than a PNG of the same picture, and the discriminator would learn the
                # file format.
                scale = min(img.size) / (2 * draft_size)
                if scale >= 2:
                    img.draft("RGB", (img.size[0] / scale, img.size[1] / scale))
            img = ImageOps.exif_transpose(img)  # also forces the decode
            return to_rgb(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (PIL's own convert() clips 16-bit values instead of scaling them)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max() <= 1.0 else arr
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def find_images(root: Path) -> list[Path]:
    """Files with an image extension under ``root``, any depth, sorted; symlinked folders followed once.

    os.walk with a set of real paths: pathlib's rglob and resolve() raise or recurse on symlink loops.
    """
    seen_dirs: set[str] = set()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


@dataclass
class ScanResult:
    files: list[Path]
    skipped: list[tuple[Path, str]]  # (file, why)


def scan_folder(root: str | Path, label: str = "folder", check: bool = True) -> ScanResult:
    """Every image file under ``root`` (any depth, sorted), skipping files whose header PIL cannot read.

    Symlinked folders are followed, each real folder once (a symlink loop cannot hang the scan).
    Raises DataError if the folder is missing or holds no readable image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{label} folder not found: {root} (set it in the config or as data.root_a=... / "
                        "data.root_b=...)")
    candidates = find_images(root)
    files, skipped = [], []
    for path in candidates:
        why = _header_problem(path) if check else None
        if why is None:
            files.append(path)
        else:
            skipped.append((path, why))
    if skipped:
        examples = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
        warnings.warn(f"{label} {root}: skipped {len(skipped)} unreadable file(s) of {len(candidates)} "
                      f"(e.g. {examples})", stacklevel=2)
    if not files:
        raise DataError(f"{label} folder {root} holds no readable image "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)} at any depth)")
    return ScanResult(files, skipped)


def _header_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, from its header alone (cheap), or None."""
    try:
        if not path.is_file():
            return "not a regular file"
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            img.size  # noqa: B018  (parsing the header is the check)
        return None
    except Image.DecompressionBombError as err:
        return f"decompression bomb ({err})"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        return f"{type(err).__name__}: {err}"


def build_transform(crop_size: int, load_size: int, resize: str = "square", flip: bool = True,
                    train: bool = True) -> A.Compose:
    """Resize, random crop, flip, normalise to [-1, 1] (the reference CycleGAN pipeline).

    Shrinking averages pixel areas (cv2.INTER_AREA): plain bilinear sampling skips most source pixels
    of a large photo and aliases fine detail into moire, where the reference's PIL bicubic antialiases.
    Enlarging stays bilinear; so does a square resize that enlarges one side and shrinks the other (cv2
    averages only when both shrink), which only images smaller than ``load_size`` on one side meet.
    """
    if resize == "square":
        ops: list = [A.Resize(load_size, load_size, area_for_downscale="image")]
    else:  # shorter_side: keep the aspect ratio; the shorter side becomes load_size (>= crop_size)
        ops = [A.SmallestMaxSize(max_size=load_size, area_for_downscale="image")]
    ops.append(A.RandomCrop(crop_size, crop_size) if train else A.CenterCrop(crop_size, crop_size))
    if flip and train:
        ops.append(A.HorizontalFlip(p=0.5))
    ops += [A.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops, strict=True)


class UnpairedDataset(torch.utils.data.Dataset):
    """Indexed by keys ``(index_a, index_b, aug_seed)`` from :class:`UnpairedStream`.

    A file that fails to decode (e.g. a truncated JPEG that passed the header check) is replaced by the
    next file of its domain, with one warning per file, so one bad image never stops a long run.
    """

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], transform: A.Compose, draft_size: int):
        self.files_a, self.files_b = list(files_a), list(files_b)
        self.transform = transform
        self.draft_size = draft_size
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def _load(self, files: list[Path], index: int) -> np.ndarray:
        for attempt in range(len(files)):
            path = files[(index + attempt) % len(files)]
            try:
                return np.asarray(load_image(path, self.draft_size))
            except ImageReadError as err:
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"{err}; using the next image instead", stacklevel=2)
        raise DataError(f"no image of {len(files)} in the folder of {files[0].parent} could be decoded")

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index_a, index_b, aug_seed = key
        out = {}
        for name, files, index, offset in (("a", self.files_a, index_a, 0), ("b", self.files_b, index_b, 1)):
            # One seed per sample and domain: reproducible wherever (and in whichever worker) it is loaded.
            self.transform.set_random_seed((aug_seed + offset) % 2**32)
            out[name] = self.transform(image=self._load(files, index))["image"]
        return out


class UnpairedStream(torch.utils.data.Sampler):
    """An endless stream of dataset keys for one process, starting at a global micro-batch.

    Global micro-batch ``g`` holds stream positions ``[g*B*W, (g+1)*B*W)`` for batch size B and W
    processes; process ``r`` takes the ``r``-th slice of B. Domain A is reshuffled every ``len_a``
    positions and domain B every ``len_b`` positions, independently (unpaired sampling).
    """

    def __init__(self, len_a: int, len_b: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0):
        self.len_a, self.len_b, self.seed = len_a, len_b, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start_batch = start_batch
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, domain: int, epoch: int, n: int) -> np.ndarray:
        key = (domain, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, domain, epoch]).permutation(n)
        return self._perms[key]

    def key(self, position: int) -> tuple[int, int, int]:
        index_a = int(self._perm(0, position // self.len_a, self.len_a)[position % self.len_a])
        index_b = int(self._perm(1, position // self.len_b, self.len_b)[position % self.len_b])
        aug_seed = int(np.random.default_rng([self.seed, 2, position]).integers(2**31))
        return index_a, index_b, aug_seed

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        batch = self.start_batch
        while True:
            first = (batch * self.world_size + self.rank) * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self.key(position)
            batch += 1


def list_inputs(path: str | Path, option: str = "--input", folder_only: bool = False, require: bool = False
                ) -> list[tuple[Path, Path]]:
    """(image file, its path relative to the input root) for one image file or every image under a folder.
    Errors name ``option`` (the setting the path came from); ``require``: an empty folder is an error too."""
    path = Path(path).expanduser()
    if path.is_file() and not folder_only:
        return [(path, Path(path.name))]
    if not path.is_dir():
        raise DataError(f"{option} folder not found: {path} (give a folder of photos)" if folder_only
                        else f"{option} not found: {path} (give an image file or a folder of images)")
    found = [(file, file.relative_to(path)) for file in find_images(path)]
    if require and not found:
        raise DataError(f"{option} folder {path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)} "
                        "at any depth)")
    return found


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a (1, 3, H, W) float tensor in [-1, 1], the networks' input range."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None].div(127.5).sub(1.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] as an RGB PIL image (clamped, rounded)."""
    arr = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def _seed_worker(worker_id: int) -> None:
    # Augmentations are seeded per sample (see UnpairedDataset); this only keeps anything else a worker
    # might draw from numpy/random distinct between workers.
    seed = torch.utils.data.get_worker_info().seed % 2**32
    np.random.seed(seed)


def build_loader(data_cfg, seed: int, batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """An endless DataLoader of ``{"a": (B,3,H,W), "b": (B,3,H,W)}`` in [-1, 1] for one process."""
    scan_a = scan_folder(data_cfg.root_a, "data.root_a")
    scan_b = scan_folder(data_cfg.root_b, "data.root_b")
    transform = build_transform(data_cfg.crop_size, data_cfg.load_size, data_cfg.resize, data_cfg.flip)
    dataset = UnpairedDataset(scan_a.files, scan_b.files, transform, draft_size=data_cfg.load_size)
    stream = UnpairedStream(len(scan_a.files), len(scan_b.files), seed, batch_size, rank, world_size, start_batch)
    workers = data_cfg.num_workers
    # Its own generator: building an iterator draws the workers' base seed, and from torch's global RNG
    # that one draw would make a resumed run's dropout (restored RNG, then iter()) differ from the
    # uninterrupted run's (iter(), then the same RNG).
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=stream, num_workers=workers, pin_memory=pin_memory,
        drop_last=True, worker_init_fn=_seed_worker if workers else None,
        generator=torch.Generator().manual_seed(seed + 1000 * rank),
        prefetch_factor=4 if workers else None, persistent_workers=False)
