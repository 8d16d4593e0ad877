"""Translate images with a trained generator: any size, batches of equal sizes, tiling for huge images.

One code path serves the Python API (``Translator``) and the ``cyclestyle translate`` command.

Tiling and instance norm: the generators normalise every feature map by its own mean and variance over
the whole image. Run tile by tile, each tile would normalise by its own statistics and the tiles would
disagree in tone. So a tiled translation first records each instance-norm layer's statistics on the whole
image, downscaled to at most ``stats_size`` pixels on its longer side, then runs the tiles with those
statistics fixed, and blends overlapping tiles with a smooth window. Memory then depends on the tile and
``stats_size``, not on the image.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cyclestyle import checkpoint, nets, reference
from cyclestyle.config import LEGACY_MODEL, ModelConfig
from cyclestyle.data import DataError, ImageReadError, list_inputs, load_image, pil_to_tensor, tensor_to_pil
from cyclestyle.devices import native_bf16, resolve_device

FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
NO_CODES = ("this model has no style codes (trained with model.style_code=none): a style image needs a model "
            "trained with model.style_code=learned or vgg")
STYLE_SIZE = 256  # shorter side of a style image when it is encoded, for exports that do not record their crop


def _is_reference(path: Path) -> bool:
    """A reference CycleGAN ``.pth``, or a reference checkpoint folder (``*_net_G_A.pth``, not a run folder)."""
    if path.is_dir():
        return not (path / "generators").is_dir() and reference.reference_folder_files(path) is not None
    return reference.is_reference_file(path)


def generators_path(path: str | Path) -> Path:
    """A run folder's generators file (generators/last.safetensors), or the given file (or reference folder)."""
    path = Path(path)
    if path.is_dir() and not _is_reference(path):
        candidate = path / "generators" / "last.safetensors"
        if not candidate.is_file():
            raise checkpoint.CheckpointError(f"{path} has no generators file ({candidate} is missing); "
                                             "pass a run folder that has trained at least to one checkpoint, "
                                             "or a reference CycleGAN checkpoint folder (*_net_G_A.pth)")
        return candidate
    return path


def read_weights(path: str | Path, path_b: str | Path | None = None) -> tuple[dict, dict]:
    """Weights per generator and metadata of anything ``--checkpoint`` takes: a run folder, a generators file,
    or a reference CycleGAN generator file (plus ``path_b`` for the other direction) or checkpoint folder."""
    path = Path(path)
    if _is_reference(path):
        return reference.read_reference(path, path_b)
    if path_b is not None:
        raise checkpoint.CheckpointError(f"--checkpoint-b {path_b} pairs with a reference generator .pth file; "
                                         f"{path} already holds both directions")
    return checkpoint.read_generators(generators_path(path))


def load_generators(path: str | Path, path_b: str | Path | None = None,
                    directions: tuple[str, ...] = ("a2b", "b2a")) -> dict[str, tuple[nn.Module, dict]]:
    """``{direction: (generator in eval mode, metadata)}`` for each of ``directions`` that :func:`read_weights`
    finds (a reference .pth alone holds a2b only)."""
    weights, meta = read_weights(path, path_b)
    try:
        # Exports written before model.upsample / model.unet_max_mult existed: transposed convolutions, and the
        # reference's widths, whatever today's defaults are.
        model_cfg = ModelConfig(**{**LEGACY_MODEL, **meta["model"]})
        meta["size_multiple"] = nets.GENERATORS[model_cfg.generator].size_multiple
        loaded = {}
        for direction, name in (("a2b", "gen_ab"), ("b2a", "gen_ba")):
            if name in weights and direction in directions:
                net = nets.build_generator(model_cfg)
                net.load_state_dict(weights[name])
                loaded[direction] = (net.eval().requires_grad_(False), meta)
    except (TypeError, KeyError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path}: weights do not match the model config stored with them "
                                         f"({str(err).splitlines()[0]}); re-export it from its run") from None
    return loaded


def load_generator(path: str | Path, direction: str = "a2b",
                   path_b: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The generator for ``direction`` from anything :func:`read_weights` takes, in eval mode, with the metadata."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be a2b or b2a, got {direction!r}")
    loaded = load_generators(path, path_b, (direction,))
    if direction not in loaded:
        raise checkpoint.CheckpointError(f"{path} holds only the a2b generator (a reference .pth is one direction): "
                                         "use --direction a2b, or give both files, --checkpoint G_A.pth "
                                         "--checkpoint-b G_B.pth")
    return loaded[direction]


class _NormStats:
    """Record, then impose, per-layer instance-norm statistics (see the module docstring)."""

    def __init__(self, net: nn.Module):
        self.layers = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
        self.stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self.stats = []

        def hook(module, inputs, output):
            # one image: its per-channel statistics, from batch norm's kernel (10x torch.var_mean on a large
            # channels_last bf16 input), which returns the mean and 1 / sqrt(var + eps)
            _, mean, invstd = torch.native_batch_norm(inputs[0], None, None, None, None, True, 0.0, module.eps)
            self.stats.append((mean.float(), (invstd.float().pow(-2) - module.eps).clamp_min(0)))

        handles = [layer.register_forward_hook(hook) for layer in self.layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def imposing(self) -> Iterator[None]:
        originals = [layer.forward for layer in self.layers]
        for layer, (mean, var) in zip(self.layers, self.stats):
            def forward(x, layer=layer, mean=mean, var=var):
                # batch norm with given statistics is the same (x - mean) / sqrt(var + eps) as one fused kernel
                return F.batch_norm(x, mean, var, layer.weight if layer.affine else None,
                                    layer.bias if layer.affine else None, training=False, eps=layer.eps)
            layer.forward = forward
        try:
            yield
        finally:
            for layer, original in zip(self.layers, originals):
                layer.forward = original


def _blend_window(size: int, overlap: int) -> torch.Tensor:
    """1 in the middle, a raised-cosine ramp over ``overlap`` pixels at both ends (never exactly 0)."""
    w = torch.ones(size)
    if overlap > 0:
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, overlap + 2)[1:-1])
        w[:overlap], w[-overlap:] = ramp, ramp.flip(0)
    return w


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


@dataclass
class Summary:
    n_done: int = 0
    n_existing: int = 0  # outputs already there (skipped without --overwrite)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (input, why)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.n_done / self.seconds if self.seconds else 0.0


class Translator:
    """``Translator.load(run_dir_or_export)(pil_image) -> pil_image``; also tensors in [-1, 1]."""

    def __init__(self, generator: nn.Module, size_multiple: int = 4, device: str | torch.device = "cpu",
                 precision: str = "fp32", meta: dict | None = None):
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        if precision == "auto":
            # bf16 where it is native: 1.8-2.2x fp32 at 256 px (README "Speed"), and on the ground-truth
            # benchmark's 64 test photos its outputs differ from fp32 by 0.19 grey levels on average
            # (max 2) at the same PSNR (22.50 dB).
            precision = "bf16" if native_bf16(self.device) else "fp32"
        if precision == "fp16" and self.device.type == "cpu":
            raise checkpoint.CheckpointError("fp16 needs a GPU; on CPU use --precision bf16 or fp32")
        self.generator = generator.to(self.device).eval()
        if self.device.type == "cpu":
            # The translator owns its generator: on a CPU its convolution weights are held channels_last, the
            # order oneDNN computes in (U-Net translation 1.4x in fp32, 1.1x in bf16 on an AMX Xeon; ResNets
            # unchanged), and in bf16 the weights are held in bf16: autocast would cast every weight on every
            # call, 10% of a 256 px ResNet-9 translation. The bf16 outputs are autocast's bits (it stays on for
            # the inputs, and casts bf16 weights to nothing).
            self.generator.to(memory_format=torch.channels_last)
            if precision == "bf16":
                self.generator.to(torch.bfloat16)
        self.size_multiple = size_multiple
        self.precision = precision
        self.meta = meta or {}
        self._norm = _NormStats(self.generator)
        self.styled = nets.is_styled(self.generator)
        # style images are encoded at the scale the model saw in training (its crops' size)
        self.style_size = int(self.meta.get("crop_size", STYLE_SIZE))

    @classmethod
    def load(cls, path: str | Path, direction: str = "a2b", device: str = "auto",
             precision: str = "fp32", path_b: str | Path | None = None) -> "Translator":
        """``path``: a run folder, a generators file, a reference CycleGAN ``.pth`` (``path_b``: the
        other direction's) or a reference checkpoint folder; see :func:`read_weights`."""
        net, meta = load_generator(path, direction, path_b)
        return cls(net, meta["size_multiple"], device, precision, meta)

    @classmethod
    def load_all(cls, path: str | Path, device: str = "auto", precision: str = "fp32",
                 path_b: str | Path | None = None) -> dict[str, "Translator"]:
        """One translator per direction that ``path`` (and ``path_b``) holds: a2b, and b2a where present."""
        return {d: cls(net, meta["size_multiple"], device, precision, meta)
                for d, (net, meta) in load_generators(path, path_b).items()}

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @torch.inference_mode()
    def style_code(self, style, mean: bool = False, strength: float = 1.0) -> torch.Tensor:
        """The code (1, style_dim) of a style image (PIL, or a (3, H, W) / (N, 3, H, W) tensor in [-1, 1]), or of
        several (a list: (N, style_dim), or their mean with ``mean``); a (N, style_dim) tensor is taken as codes.
        Images are resized so their shorter side is the training crop's size.

        ``strength`` moves the code along the line from the domain's mean code (0) through the painting's (1,
        the default) and beyond (above 1: exaggerated): ``mean + strength * (code - mean)``, StyleGAN's
        truncation trick, here as a dial between the domain's average style and the chosen painting's."""
        if not self.styled:
            raise checkpoint.CheckpointError(NO_CODES)
        check_strength(strength)
        codes = self._codes(style)
        codes = codes.mean(0, keepdim=True) if mean else codes
        if strength != 1:
            centre = self.generator.mean_code.to(codes)
            codes = centre + strength * (codes - centre)
        return codes

    def _codes(self, style) -> torch.Tensor:
        """:meth:`style_code`'s codes before the mean and the strength: one per image, or the codes given."""
        if isinstance(style, torch.Tensor) and style.dim() == 2:
            codes = style.to(self.device, torch.float32)
        else:
            images = style if isinstance(style, (list, tuple)) else [style]
            codes = []
            for image in images:
                x = image if isinstance(image, torch.Tensor) else pil_to_tensor(resized(image, self.style_size, None))
                x = x[None] if x.dim() == 3 else x
                with self._autocast():
                    codes.append(self.generator(x.to(self.device, torch.float32), encode_only=True).float())
            codes = torch.cat(codes)
        return codes

    @torch.inference_mode()
    def translate_tensor(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> same shape; padded to the network's multiple and cropped back. ``code``:
        a style code (1 or N, style_dim) for a style-coded model (None: its stored mean code)."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        # at least 16 px: a ResNet generator's 3x3 reflection pads need 4 px after two downsamplings
        ph, pw = max(-h % m, 16 - h, 0), max(-w % m, 16 - w, 0)
        ph, pw = ph + (-(h + ph) % m), pw + (-(w + pw) % m)
        x = x.to(self.device, torch.float32)
        if ph or pw:  # reflect where the image is large enough, else replicate
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if code is not None and not self.styled:
            raise checkpoint.CheckpointError(NO_CODES)
        with self._autocast():
            y = self.generator(x, style=code) if self.styled else self.generator(x)
        return y[..., :h, :w].float().clamp(-1, 1)

    @torch.inference_mode()
    def translate_tiled(self, x: torch.Tensor, tile: int = 512, overlap: int = 64,
                        stats_size: int = 1024, code: torch.Tensor | None = None) -> torch.Tensor:
        """(1, 3, H, W) -> (1, 3, H, W) tile by tile (see the module docstring), one ``code`` for every tile;
        output on the CPU."""
        m = self.size_multiple
        tile = max(m, tile - tile % m)
        overlap = min(overlap, tile // 2)
        _, _, h, w = x.shape
        scale = min(1.0, stats_size / max(h, w))
        small = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="area")
        with self._norm.recording():
            self.translate_tensor(small, code)
        out = torch.zeros(1, 3, h, w)
        weight = torch.zeros(1, 1, h, w)
        with self._norm.imposing():
            for top in _tile_starts(h, tile, overlap):
                for left in _tile_starts(w, tile, overlap):
                    patch = x[..., top:top + tile, left:left + tile]
                    th, tw = patch.shape[-2:]
                    wy = _blend_window(th, overlap if th == tile else 0)
                    wx = _blend_window(tw, overlap if tw == tile else 0)
                    # image borders are covered by one tile only: no ramp there
                    if top == 0:
                        wy[: th // 2] = 1.0
                    if top + th == h:
                        wy[th // 2:] = 1.0
                    if left == 0:
                        wx[: tw // 2] = 1.0
                    if left + tw == w:
                        wx[tw // 2:] = 1.0
                    win = (wy[:, None] * wx[None, :])[None, None]
                    out[..., top:top + th, left:left + tw] += self.translate_tensor(patch, code).cpu() * win
                    weight[..., top:top + th, left:left + tw] += win
        return out / weight

    def __call__(self, image, tile: int | None = None, overlap: int = 64, style=None, strength: float = 1.0):
        """PIL image -> PIL image (same size), or tensor (N,3,H,W)/(3,H,W) in [-1,1] -> tensor. ``style``: a style
        image (PIL or tensor) or code for a style-coded model, and its ``strength``, see :meth:`style_code`
        (None: the mean code)."""
        code = None if style is None else self.style_code(style, strength=strength)
        if isinstance(image, torch.Tensor):
            batch = image if image.dim() == 4 else image[None]
            if tile:
                out = torch.cat([self.translate_tiled(b[None], tile, overlap, code=code) for b in batch])
            else:
                out = self.translate_tensor(batch, code)
            return out if image.dim() == 4 else out[0]
        x = pil_to_tensor(image)
        y = self.translate_tiled(x, tile, overlap, code=code) if tile else self.translate_tensor(x, code)
        return tensor_to_pil(y[0])

    def translate_folder(self, input_path: str | Path, output_dir: str | Path, fmt: str = "png",
                         overwrite: bool = False, size: int | None = None, max_size: int | None = None,
                         batch_size: int = 1, tile: int | None = None, overlap: int = 64,
                         max_pixels: int | None = None, progress: bool = False,
                         code: torch.Tensor | None = None) -> Summary:
        """Translate a file or every image under a folder into ``output_dir``, mirroring sub-folders; ``code``:
        one style code (:meth:`style_code`) for every image."""
        return translate_folder(self, input_path, output_dir, fmt, overwrite, size, max_size, batch_size, tile,
                                overlap, max_pixels, progress, code)


def check_strength(strength, name: str = "style strength") -> float:
    """``strength`` (:meth:`Translator.style_code`) as a float if it is a number >= 0, else a DataError naming
    ``name``, the setting the user gave it through."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
        raise DataError(f"{name} must be a number >= 0 (0: the domain's mean style, 1: the painting's), "
                        f"got {strength!r}")
    return float(strength)


def resized(image: Image.Image, size: int | None, max_size: int | None) -> Image.Image:
    """``size``: shorter side becomes ``size``; ``max_size``: longer side at most ``max_size``; else as is."""
    w, h = image.size
    if size:
        scale = size / min(w, h)
    elif max_size and max(w, h) > max_size:
        scale = max_size / max(w, h)
    else:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def translate_folder(translator: Translator, input_path, output_dir, fmt="png", overwrite=False, size=None,
                     max_size=None, batch_size=1, tile=None, overlap=64, max_pixels=None,
                     progress=False, code=None) -> Summary:
    from tqdm.auto import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    input_path, output_dir = Path(input_path), Path(output_dir)
    inputs = list_inputs(input_path)
    input_files = {os.path.realpath(p) for p, _ in inputs}  # realpath: no error on symlink loops
    summary = Summary()
    started = time.perf_counter()
    # Without tiling, a huge image would be translated in one piece: refuse anything over PIL's bomb
    # warning limit (89 Mpx) and say how to do it. Tiled, the network's memory is bounded by the tile;
    # the decoded image itself still has to fit, so PIL's hard limit (2x that) stays.
    limit = None if tile else (max_pixels or Image.MAX_IMAGE_PIXELS)
    pending: list[tuple[Path, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        out = translator.translate_tensor(torch.cat([x for _, x in pending]), code)
        for (target, _), y in zip(pending, out):
            _save(tensor_to_pil(y), target)
        summary.n_done += len(pending)
        pending.clear()

    bar = tqdm(inputs, disable=not progress, unit="img", dynamic_ncols=True)
    for path, rel in bar:
        target = output_dir / rel.with_suffix(FORMATS[fmt])
        if os.path.realpath(target) in input_files:
            summary.skipped.append((path, f"output {target} would overwrite an input; choose another --output"))
            continue
        if target.exists() and not overwrite:
            summary.n_existing += 1
            continue
        try:
            image = _open_limited(path, limit)
        except ImageReadError as err:
            summary.skipped.append((path, str(err)))
            warnings.warn(f"skipped {err}", stacklevel=2)
            continue
        x = pil_to_tensor(resized(image, size, max_size))
        if tile:
            _save(tensor_to_pil(translator.translate_tiled(x, tile, overlap, code=code)[0]), target)
            summary.n_done += 1
            continue
        if pending and pending[0][1].shape != x.shape:
            flush()  # only images of equal size share a batch
        pending.append((target, x))
        if len(pending) >= batch_size:
            flush()
    flush()
    summary.seconds = time.perf_counter() - started
    return summary


def _open_limited(path: Path, max_pixels: int | None) -> Image.Image:
    """Decode ``path``, refusing images over ``max_pixels`` (None: PIL's own bomb limit, 2x its warning)."""
    if max_pixels is not None:
        try:
            with Image.open(path) as probe:
                pixels = probe.size[0] * probe.size[1]
        except Image.DecompressionBombError:
            pixels = max_pixels + 1
        except Exception:
            pixels = 0  # not an image: load_image below says why
        if pixels > max_pixels:
            raise ImageReadError(f"cannot read image {path}: over the {max_pixels} px limit for untiled "
                                 "translation (a decompression bomb, or just huge); use --tile 512")
    return load_image(path)


def _save(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[target.suffix]
    image.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    tmp.replace(target)  # a killed run never leaves a half-written output that a rerun would skip
