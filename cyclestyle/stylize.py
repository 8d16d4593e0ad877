"""Single-image neural style transfer (Gatys et al. 2016): optimise the pixels of one image so that its
VGG-19 Gram matrices match a painting's and its relu4_2 activations match a photo's.

The features, the Gram matrices (relu1_1 ... relu5_1, normalised by C*H*W, in fp32) and the Gram loss are
the CycleGAN style loss's own (``cyclestyle.vgg``, ``losses.GramTarget``): one implementation for both.

Multi-scale (``scales=K``): optimise at 1/2^(K-1) of the output size, then upsample and refine at each
doubling with fewer steps (``refine_steps``, default steps // 4). A step costs in proportion to the pixels,
so the coarse scales are cheap; they settle the large structures and the full size only adds detail.

Colour preservation (``preserve_color``): luminance-only transfer (Gatys et al. 2016, "Preserving color in
neural artistic style transfer"). VGG sees only luminance, the style's matched to the content's mean and
deviation, and the result's luminance is recombined with the content's chroma (YCbCr, JPEG's full-range
BT.601, as PIL's "YCbCr" mode). The output's Cb/Cr then equal the content's, up to RGB clipping and 8 bits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from cyclestyle.data import DataError, pil_to_tensor, tensor_to_pil
from cyclestyle.devices import resolve_device
from cyclestyle.losses import GramTarget
from cyclestyle.vgg import STYLE_LAYERS, VGGFeatures

CONTENT_LAYER = "relu4_2"
LAYERS = STYLE_LAYERS + (CONTENT_LAYER,)  # what the VGG passed to stylize() must provide
MIN_SIDE = 16  # relu5_1 comes after four 2x poolings: a smaller image leaves it no pixel
LBFGS_HISTORY = 20  # pairs of image-sized vectors kept: 20 x 2 x 12 MB at 1024 px; 100 (torch's default) is 2.4 GB
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.08}  # Adam: in [-1, 1] units, neural-style's 10 on a 0-255 scale


@dataclass
class Step:
    """What ``callback`` gets after every optimisation step (``losses`` alone make a loss history)."""

    step: int  # 1-based, counted across scales
    total: int  # steps of all scales together
    scale: int  # 0 = coarsest
    size: tuple[int, int]  # (width, height) at this scale
    losses: dict[str, float]  # weighted style, content, tv terms and their total, of the image this step started from
    image: torch.Tensor  # (1, 3, H, W) in [-1, 1] after the step: the live image, clone it to keep it
    chroma: torch.Tensor | None = field(default=None, repr=False)  # the content's Cb/Cr under preserve_color

    def to_pil(self) -> Image.Image:
        """The current image as the output would be (the content's colours put back under preserve_color)."""
        return tensor_to_pil(_with_chroma(self.image.detach(), self.chroma)[0])


class GatysLoss:
    """Weighted style + content + total-variation loss of images of one size; targets fixed at construction.

    ``loss(x)`` -> {"style", "content", "tv", "total"} (weighted, fp32). bf16 runs only the VGG forward in
    bf16 (autocast): the Grams are fp32 (see ``gram_matrix``) and the content features are cast up.
    """

    def __init__(self, vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor, style_weight: float = 1e6,
                 content_weight: float = 1.0, tv_weight: float = 0.0, precision: str = "fp32"):
        self.vgg = vgg
        self.weights = {"style": style_weight, "content": content_weight, "tv": tv_weight}
        self.dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        with torch.no_grad():
            style_grams, _ = self._features(style)
            _, content_feats = self._features(content)
        # The style target of one image is the "running mean" of one Gram: GramTarget's first update is exact.
        self.style_target = GramTarget([g.shape[-1] for g in style_grams]).to(style.device)
        self.style_target.update(style_grams)
        self.content_target = content_feats[CONTENT_LAYER].float()

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.vgg.grams_and_features(x, STYLE_LAYERS)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        grams, feats = self._features(x)
        terms = {"style": self.style_target.loss(grams),
                 "content": F.mse_loss(feats[CONTENT_LAYER].float(), self.content_target),
                 "tv": total_variation(x)}
        terms = {k: self.weights[k] * v for k, v in terms.items()}
        terms["total"] = terms["style"] + terms["content"] + terms["tv"]
        return terms


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertical plus horizontal neighbours (smooth, so L-BFGS-friendly)."""
    x = x.float()
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., 1:] - x[..., :-1]).square().mean()


def load_vgg(weights: str = "imagenet", option: str = "vgg_weights") -> VGGFeatures:
    """A frozen VGG-19 with the style and content layers; ``option`` is named in missing-weights errors."""
    return VGGFeatures(weights, LAYERS, option=option, needed_by="cyclestyle stylize")


def output_size(content_size: tuple[int, int], size: int | None) -> tuple[int, int]:
    """(width, height) with the longer side ``size`` and the content's aspect ratio; None: the content's."""
    w, h = content_size
    if size is None:
        return w, h
    scale = size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def scale_sizes(out_size: tuple[int, int], scales: int = 1) -> list[tuple[int, int]]:
    """The (width, height) of each scale, coarsest first, halving from ``out_size``."""
    w, h = out_size
    sizes = [(max(1, round(w / 2**k)), max(1, round(h / 2**k))) for k in reversed(range(scales))]
    if min(sizes[0]) < MIN_SIDE:
        what = f"the coarsest of {scales} scales" if scales > 1 else "the image"
        raise DataError(f"{what} would be {sizes[0][0]}x{sizes[0][1]} px, but VGG-19 needs at least {MIN_SIDE} px "
                        "on each side; use a larger --size" + (" or fewer --scales" if scales > 1 else ""))
    return sizes


def scale_plan(out_size: tuple[int, int], steps: int, scales: int = 1, refine_steps: int | None = None
               ) -> list[tuple[tuple[int, int], int]]:
    """[((width, height), steps)] per scale, coarsest first. A step costs in proportion to its pixels, so with
    the default refine_steps = steps // 4, 1024 px over 2 scales costs 2x 512 px in one, over 3 scales 1.5x."""
    refine = max(1, steps // 4) if refine_steps is None else refine_steps
    return list(zip(scale_sizes(out_size, scales), [steps] + [refine] * (scales - 1), strict=True))


def _style_size(style_size: tuple[int, int], longer: float) -> tuple[int, int]:
    w, h = style_size
    scale = longer / max(w, h)
    size = max(1, round(w * scale)), max(1, round(h * scale))
    if min(size) < MIN_SIDE:
        raise DataError(f"the style image scaled to {size[0]}x{size[1]} px is under VGG-19's {MIN_SIDE} px per side; "
                        "use a larger --size or --style-scale, or a less elongated style image")
    return size


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


# JPEG / PIL full-range BT.601 YCbCr, on images in [0, 1] (Cb, Cr centred on 0.5).
_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_CBCR_OFFSET = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [-1, 1] -> YCbCr in [0, 1]."""
    m = _TO_YCBCR.to(x.device, x.dtype)
    return torch.einsum("ij,njhw->nihw", m, (x + 1) / 2) + _CBCR_OFFSET.to(x.device, x.dtype)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) YCbCr in [0, 1] -> RGB in [-1, 1], clipped."""
    m = torch.linalg.inv(_TO_YCBCR.double()).to(ycc.device, ycc.dtype)
    rgb = torch.einsum("ij,njhw->nihw", m, ycc - _CBCR_OFFSET.to(ycc.device, ycc.dtype))
    return (rgb * 2 - 1).clamp(-1, 1)


def _luminance_only(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """The luminance of ``x`` as a grey RGB image; with ``like``, shifted and scaled to its mean and deviation."""
    y = rgb_to_ycbcr(x)[:, :1]
    if like is not None:
        target = rgb_to_ycbcr(like)[:, :1]
        y = ((y - y.mean()) * (target.std() / y.std().clamp_min(1e-6)) + target.mean()).clamp(0, 1)
    return (y * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def _with_chroma(x: torch.Tensor, chroma: torch.Tensor | None) -> torch.Tensor:
    """``x``'s luminance with ``chroma`` (Cb, Cr in [0, 1]); ``x`` itself if ``chroma`` is None."""
    if chroma is None:
        return x
    return ycbcr_to_rgb(torch.cat([rgb_to_ycbcr(x)[:, :1], chroma], dim=1))


def _optimizer(name: str, x: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    if name == "lbfgs":
        # One iteration per step() (its curvature history persists between calls): one VGG forward/backward
        # per step like Adam, a progress bar that moves, and the image can be clipped to [-1, 1] in between.
        return torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=LBFGS_HISTORY)
    return torch.optim.Adam([x], lr=lr)


def stylize(content: Image.Image, style: Image.Image, size: int | None = 512, steps: int = 300, *,
            style_weight: float = 1e6, content_weight: float = 1.0, tv_weight: float = 0.0,
            init: str = "content", optimizer: str = "lbfgs", lr: float | None = None, scales: int = 1,
            refine_steps: int | None = None, style_scale: float = 1.0, preserve_color: bool = False,
            device: str | torch.device = "auto", precision: str = "fp32", vgg: VGGFeatures | None = None,
            vgg_weights: str = "imagenet", seed: int = 0, callback: Callable[[Step], None] | None = None,
            progress: bool = False) -> Image.Image:
    """Paint ``content`` in the style of ``style``; returns an RGB image with the content's aspect ratio.

    size: longer side of the output in px (None: the content's size). steps: optimisation steps at the
    coarsest scale; refine_steps (default steps // 4) at each of the ``scales - 1`` finer ones. style_scale:
    the style image is resized so that its longer side is the working image's times this (larger: bigger
    brush strokes). init: start from the content or from noise (drawn with ``seed``). lr: default 1 for
    lbfgs, 0.08 for adam. vgg: a ``VGGFeatures`` with ``LAYERS``, moved to ``device`` (else loaded from
    ``vgg_weights``). The output is the lowest-loss image seen at the finest scale (see ``_optimise``).
    callback: called with a :class:`Step` after every step.
    """
    for name, value, allowed in (("init", init, ("content", "noise")), ("optimizer", optimizer, ("lbfgs", "adam")),
                                 ("precision", precision, ("fp32", "bf16"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if steps < 1 or scales < 1 or (refine_steps is not None and refine_steps < 1):
        raise ValueError(f"steps, scales and refine_steps must be >= 1, got {steps}, {scales}, {refine_steps}")
    dev = resolve_device(device) if isinstance(device, str) else device
    vgg = load_vgg(vgg_weights) if vgg is None else vgg
    missing = [name for name in LAYERS if name not in vgg.layers]
    if missing:
        raise ValueError(f"the VGG lacks layers {missing}: build it as VGGFeatures(weights, cyclestyle.stylize.LAYERS)")
    vgg = vgg.to(dev)
    content, style = content.convert("RGB"), style.convert("RGB")
    plan = scale_plan(output_size(content.size, size), steps, scales, refine_steps)
    total = sum(n for _, n in plan)
    lr = DEFAULT_LR[optimizer] if lr is None else lr

    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True)
    x, chroma, done = None, None, 0

    def report(scale: int, wh: tuple[int, int], cbcr: torch.Tensor | None, terms: dict[str, float],
               image: torch.Tensor) -> None:
        nonlocal done
        done += 1
        bar.update(1)
        bar.set_postfix({"size": f"{wh[0]}x{wh[1]}", **{n: f"{v:.3g}" for n, v in terms.items()}}, refresh=False)
        if callback is not None:
            callback(Step(done, total, scale, wh, terms, image, cbcr))

    for k, (wh, n_steps) in enumerate(plan):
        c = pil_to_tensor(_resized(content, wh)).to(dev)
        s = pil_to_tensor(_resized(style, _style_size(style.size, max(wh) * style_scale))).to(dev)
        if preserve_color:
            chroma = rgb_to_ycbcr(c)[:, 1:]
            c, s = _luminance_only(c), _luminance_only(s, like=c)
        loss_fn = GatysLoss(vgg, c, s, style_weight, content_weight, tv_weight, precision)
        if x is None and init == "content":
            x = c.clone()
        elif x is None:
            x = (torch.randn(c.shape, generator=torch.Generator().manual_seed(seed)) * 0.5).clamp(-1, 1).to(dev)
        else:  # refine the previous scale's result, upsampled
            x = F.interpolate(x, size=(wh[1], wh[0]), mode="bicubic", align_corners=False).clamp(-1, 1)
        x = _optimise(x, loss_fn, optimizer, lr, n_steps, functools.partial(report, k, wh, chroma))
    bar.close()
    return tensor_to_pil(_with_chroma(x, chroma)[0])


def _optimise(x: torch.Tensor, loss_fn: GatysLoss, optimizer: str, lr: float, n_steps: int,
              on_step: Callable[[dict[str, float], torch.Tensor], None]) -> torch.Tensor:
    """``n_steps`` steps from ``x``; returns the lowest-loss image seen (detached).

    L-BFGS without a line search takes fixed steps from a curvature estimate built from gradient
    differences, and the clipping to [-1, 1] between steps bends those further: the loss can jump by 100x
    for a few steps (more often under bf16) before coming back lower. So the best image is kept rather
    than the last. Restarting L-BFGS after a jump was tried and is worse: an empty memory restarts with a
    tiny step and stalls. Only a non-finite loss (which would poison the memory) restarts it from the best.
    """
    x = x.detach().contiguous().requires_grad_(True)  # contiguous: L-BFGS flattens the gradient with view()
    opt = _optimizer(optimizer, x, lr)
    best, best_x = math.inf, x.detach().clone()
    terms: dict[str, float] = {}

    def closure():
        nonlocal best, best_x
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss["total"].backward()
        terms.update({name: v.item() for name, v in loss.items()})
        if terms["total"] < best:  # x before this step's update
            best, best_x = terms["total"], x.detach().clone()
        return loss["total"]

    for step in range(1, n_steps + 1):
        opt.step(closure)
        if not math.isfinite(terms["total"]) and (optimizer != "lbfgs" or not math.isfinite(best)):
            raise FloatingPointError(f"stylize diverged at step {step} of a scale (loss {terms['total']}); "
                                     "try a lower --lr or --style-weight")
        if not math.isfinite(terms["total"]):  # L-BFGS: restart from the best image with an empty memory
            with torch.no_grad():
                x.copy_(best_x)
            opt = _optimizer(optimizer, x, lr)
        with torch.no_grad():
            x.clamp_(-1, 1)  # keep a valid image: VGG never sees, nor the output holds, impossible colours
        on_step(dict(terms), x.detach())
    with torch.no_grad():  # the last update's result has not been measured yet
        if loss_fn(x)["total"].item() < best:
            best_x = x.detach().clone()
    return best_x


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` in the format of ``path``'s extension via a temporary file (never half-written)."""
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    tmp.replace(path)
    return path


def image_format(path: str | Path) -> str:
    """PIL's format name for ``path``'s extension; DataError naming the file if PIL cannot write it."""
    Image.init()
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise DataError(f"cannot write {path}: unknown image extension '{Path(path).suffix}'; use .png, .jpg or .webp")
    return fmt
