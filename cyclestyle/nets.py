"""Generators and discriminators: plain ``nn.Module``s with explicit arguments, in small registries.

Architectures follow the CycleGAN paper (Zhu et al. 2017, appendix 7.2) and its reference code:
ResNet generators with reflection padding and instance norm, U-Net generators, 70x70 PatchGAN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` with a fast path for channels_last inputs: one batch norm per image.

    Written by hand because on CPU, where the ResNet generators, the PatchGAN and the U-Net in bf16 inference
    run channels_last (see :func:`cpu_channels_last`), torch's instance norm makes a channels_last input contiguous
    and back (two copies per call), and the group-norm kernel with one channel per group is 44x slower
    backwards than forwards; batch norm over one image is the same statistics (per channel, over H x W) and
    has fast channels_last kernels both ways (README "Speed" has the measurements)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.affine or self.track_running_stats or x.dim() != 4 or x.is_contiguous() or torch.jit.is_tracing()
                or not x.is_contiguous(memory_format=torch.channels_last)):  # a trace would fix the batch size
            return super().forward(x)
        per_image = [nn.functional.batch_norm(image, None, None, training=True, eps=self.eps) for image in x.split(1)]
        return per_image[0] if len(per_image) == 1 else torch.cat(per_image)


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that keeps its input's dtype under autocast.

    CPU autocast runs reflection padding in fp32, so in bf16 every pad cast its input up and the next conv
    cast it back down: four copies per pad in forward and backward, for an op that only copies values (and
    is exact in any dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x)


def cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last memory order on a CPU (a no-op where it already is, or on a GPU).

    The networks whose forward starts with this run faster that way on CPUs, in every precision, with results
    equal up to rounding (kernels sum in another order; within 1e-5 in fp32). Measured per architecture on an
    AMX Xeon (README "Speed"): ResNet generator forward + backward 1.1-1.3x in fp32 and 1.2-2.1x in bf16,
    PatchGAN 0.9-1.5x; the U-Net only in bf16 inference (0.6x in fp32, slower training). In bf16, oneDNN's
    AMX kernels compute in channels_last anyway: fed NCHW, every convolution converted its output and,
    backwards, its input. Only activations change order; parameters, checkpoints and exports stay as they are."""
    if torch.jit.is_tracing() or x.device.type != "cpu" or x.dim() != 4:  # exports keep plain NCHW graphs
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _norm(kind: str, channels: int) -> nn.Module:
    # affine=False, no running stats: instance norm as in the reference CycleGAN (and no buffers to sync)
    return InstanceNorm2d(channels) if kind == "instance" else nn.Identity()


class FiLM(nn.Module):
    """Feature-wise affine modulation by a style code (Perez et al. 2018), placed after an instance norm: the
    pair is AdaIN (Huang & Belongie 2017) with a learned map from code to per-channel scale and shift.

    The code is set by :class:`StyledGenerator` for the duration of one forward (``self.code``, (N, style_dim)).
    Zero-initialised (plain parameters, so ``init_weights`` leaves them alone): a coded generator starts as the
    plain one. Per channel and per image only, so tiles translated with one code agree.

    ``lr_mult``: the stored parameters are multiplied by it in the forward pass, which under Adam (whose step
    does not depend on the gradient's scale) is that much learning rate for the modulation alone: StyleGAN's
    learning-rate multiplier (Karras et al. 2019), with one optimizer param group and nothing to change on
    resume. Measured on the multi-painter benchmark (README, "Style codes"): 3 makes translations follow the
    code more (right minus wrong reference +1.0 to +3.2 dB over four runs on two machines, mean +1.9, against
    +0.1 to +0.8 at 1) but costs the mean code up to 0.7 dB and the oil painter 1.4 dB on both seeds, so the
    default stays 1.
    """

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2 * channels, style_dim))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        self.lr_mult = 1.0  # set by build_generator from model.film_lr_mult (the FiLMs sit deep in the decoder)
        self.code: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.code is None:
            raise RuntimeError("FiLM used outside StyledGenerator.forward (no style code set)")
        m = self.lr_mult
        scale, shift = nn.functional.linear(self.code.to(x.dtype), (self.weight * m).to(x.dtype),
                                            (self.bias * m).to(x.dtype)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


def _decoder_norm(kind: str, channels: int, style_dim: int) -> list[nn.Module]:
    """A decoder's norm, followed by FiLM when the generator is style-coded (``style_dim`` > 0)."""
    return [_norm(kind, channels)] + ([FiLM(style_dim, channels)] if style_dim else [])


def on_sphere(code: torch.Tensor) -> torch.Tensor:
    """Codes (N, style_dim) scaled onto the sphere of radius sqrt(style_dim) (normalised in fp32): a code's scale
    cannot shrink towards a trivial code-reconstruction loss, only its direction carries the style."""
    return nn.functional.normalize(code.float(), dim=1).to(code.dtype) * code.shape[1] ** 0.5


class StyleEncoder(nn.Module):
    """Image -> style code (N, style_dim): strided convs without normalisation (a norm would remove the very
    statistics a style is made of), global average pooling, a 1x1 conv (MUNIT's style encoder, Huang et al. 2018).

    ``input_norm=True``: the encoder sees its input with each channel's mean and spread removed (per image), so a
    code can hold texture, strokes and line work but not the palette of the painting it was read from; the
    decoder then takes the colours from what the rest of the domain taught it. Measured on the multi-painter
    benchmark (README, "Style codes"): at 600 steps the generator then ignores the code (right and wrong
    reference within 0.1 dB), so the default stays the raw image.
    """

    def __init__(self, style_dim: int, nf: int = 16, in_ch: int = 3, input_norm: bool = False):
        super().__init__()
        self.input_norm = input_norm
        layers: list[nn.Module] = [ReflectionPad2d(3), nn.Conv2d(in_ch, nf, 7), nn.ReLU(True)]
        ch = nf
        for mult in (2, 4, 4, 4):
            layers += [nn.Conv2d(ch, nf * mult, 4, stride=2, padding=1), nn.ReLU(True)]
            ch = nf * mult
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, style_dim, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm:
            x = nn.functional.instance_norm(x)
        return on_sphere(self.model(x).flatten(1))


class VGGStyleEncoder(nn.Module):
    """Image -> style code from fixed VGG-19 features (``model.style_code=vgg``): the per-channel mean and standard
    deviation of ``CODE_LAYERS`` (global pooling: the statistics AdaIN transfers, Huang & Belongie 2017; 2 x (64 +
    128 + 256) = 896 numbers), then a small learned mapping network (two linear layers) onto the sphere of
    :class:`StyleEncoder`'s codes, so that mean codes, random codes, the code term and the exports work as for
    learned codes. The VGG is frozen; its weights (``loss.vgg_weights``, the style loss's, under the same offline
    rules) are part of the generator's state (2.2 MB), so a saved model encodes style images without a download.
    relu4_1 is left out: it would more than double an encoding's cost (at 128 px 2.1 G multiply-adds more, on
    top of 1.8 G) and add 12 MB of weights.
    """

    CODE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")

    def __init__(self, style_dim: int, weights: str = "random", input_norm: bool = False, hidden: int = 64):
        from cyclestyle.vgg import VGGFeatures

        super().__init__()
        self.input_norm = input_norm
        self.vgg = VGGFeatures(weights, self.CODE_LAYERS, needed_by="model.style_code=vgg")
        self.head = nn.Sequential(nn.Linear(2 * sum(self.vgg.channels), hidden), nn.ReLU(True),
                                  nn.Linear(hidden, style_dim))

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 896): each layer's per-channel means, then standard deviations, in fp32."""
        if self.input_norm:
            x = nn.functional.instance_norm(x)
        feats = self.vgg(x)
        stats = []
        for name in self.CODE_LAYERS:
            var, mean = torch.var_mean(feats[name].float(), dim=(2, 3), correction=0)
            stats += [mean, (var + 1e-5).sqrt()]  # eps: the square root's gradient at a flat channel
        return torch.cat(stats, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return on_sphere(self.head(self.statistics(x)))


def hue_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] with their colours turned about the grey axis, image i by ``angles[i]``
    radians: the hue turns (by 2 pi / 3, red becomes green), grey stays grey and each pixel keeps the mean of its
    three channels (up to the clamp to [-1, 1]). Rodrigues' rotation about (1, 1, 1) / sqrt(3), written out:
    torchvision's ``adjust_hue`` shifts hue in HSV by one factor per call, this is one 3x3 matrix per image of a
    batch, in one einsum."""
    c, s = torch.cos(angles.float()), torch.sin(angles.float())
    t, r = (1 - c) / 3, s / 3 ** 0.5
    rot = torch.stack([torch.stack([c + t, t - r, t + r], -1),
                       torch.stack([t + r, c + t, t - r], -1),
                       torch.stack([t - r, t + r, c + t], -1)], -2)  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", rot.to(x.dtype), x).clamp(-1, 1)


def random_hue_rotate(x: torch.Tensor) -> torch.Tensor:
    """:func:`hue_rotate` by angles drawn uniformly in [-pi, pi), one per image, from torch's global RNG
    (saved in checkpoints, so a resumed run draws the same)."""
    return hue_rotate(x, (torch.rand(x.shape[0], device=x.device) * 2 - 1) * torch.pi)


def random_codes(n: int, style_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` codes drawn uniformly on the encoder's sphere (radius sqrt(style_dim)), from torch's global RNG."""
    return on_sphere(torch.randn(n, style_dim, device=device))


class StyledGenerator(nn.Module):
    """A generator whose decoder follows a style code: ``forward(x, style)`` with ``style`` a batch of style
    images (encoded here), of codes (N, style_dim), or None: the target domain's mean code, tracked during
    training (:meth:`track_mean`) and saved with the weights, so every caller that passes only ``x`` gets the
    domain's average style, as from a plain CycleGAN. ``encode_only=True`` returns the codes of ``x``;
    ``frozen_encoder=True`` with it: gradients reach ``x`` but not the encoder's weights (the code-reconstruction
    term trains the generator to carry the code; trained through it, the encoder would collapse to a constant,
    which makes the term zero).
    """

    def __init__(self, net: nn.Module, encoder: nn.Module, style_dim: int, momentum: float = 0.999):
        super().__init__()
        self.net = net
        self.encoder = encoder  # a StyleEncoder or a VGGStyleEncoder: images -> codes on the sphere
        self.style_dim = style_dim
        self.momentum = momentum
        self.register_buffer("mean_code", torch.zeros(style_dim))
        self.register_buffer("code_count", torch.zeros((), dtype=torch.long))

    def films(self) -> list[FiLM]:
        return [m for m in self.net.modules() if isinstance(m, FiLM)]

    def code_of(self, style: torch.Tensor | None, n: int) -> torch.Tensor:
        if style is None:
            return self.mean_code.expand(n, -1)
        code = self.encoder(style) if style.dim() == 4 else style
        return code.expand(n, -1) if code.shape[0] == 1 else code

    @torch.no_grad()
    def track_mean(self, codes: torch.Tensor) -> None:
        """Fold codes of real target-domain images into the mean code: the exact mean over the first
        ``1 / (1 - momentum)`` updates, a moving average after (as ``losses.GramTarget``)."""
        self.code_count += 1
        rate = max(1.0 / float(self.code_count), 1.0 - self.momentum)
        self.mean_code.lerp_(codes.float().reshape(-1, self.style_dim).mean(0), rate)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None, encode_only: bool = False,
                frozen_encoder: bool = False) -> torch.Tensor:
        if encode_only and frozen_encoder:
            frozen = {name: p.detach() for name, p in self.encoder.named_parameters()}
            return torch.func.functional_call(self.encoder, frozen, (x,))
        if encode_only:
            return self.encoder(x)
        code = self.code_of(style, x.shape[0])
        films = self.films()
        for film in films:
            film.code = code
        try:
            return self.net(x)
        finally:
            for film in films:
                film.code = None


class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dropout: bool):
        super().__init__()
        layers = [ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


UPSAMPLING = ("resize", "deconv")


def _upsample(kind: str, in_ch: int, out_ch: int) -> list[nn.Module]:
    """One x2 upsampling of the ResNet generator's decoder.

    ``deconv``: a stride-2 transposed 3x3 convolution, as in the CycleGAN paper and its reference code. Its
    kernel overlaps unevenly on the output grid, which gives the checkerboard artifacts of early training.
    ``resize``: nearest-neighbour x2, then a 3x3 convolution (Odena et al. 2016, "Deconvolution and
    checkerboard artifacts"); the same parameter count and FLOPs. The README's benchmark tables compare them.
    """
    if kind == "deconv":
        return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
    raise ValueError(f"unknown upsampling '{kind}': {' or '.join(UPSAMPLING)}")


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings, c7s1-3, tanh."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False, upsample: str = "deconv", style_dim: int = 0):
        super().__init__()
        layers: list[nn.Module] = [ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _norm(norm, ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(norm, ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm, dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [*_upsample(upsample, ch, ch // 2), *_decoder_norm(norm, ch // 2, style_dim), nn.ReLU(True)]
            ch //= 2
        layers += [ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(cpu_channels_last(x))


def _unet_upsample(kind: str, in_ch: int, out_ch: int) -> list[nn.Module]:
    """One x2 upsampling of a U-Net level: ``deconv`` is the reference code's 4x4 stride-2 transposed
    convolution (even overlap in 1-D, but its 2-D taps still start out uneven); ``resize`` is nearest x2 and
    a 3x3 convolution, as in :func:`_upsample`."""
    if kind == "deconv":
        return [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]
    raise ValueError(f"unknown upsampling '{kind}': {' or '.join(UPSAMPLING)}")


class UnetBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, and a skip connection around them."""

    def __init__(self, outer: int, inner: int, in_ch: int | None = None, submodule: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, norm: str = "instance", dropout: bool = False,
                 upsample: str = "deconv", style_dim: int = 0):
        super().__init__()
        self.outermost = outermost
        in_ch = outer if in_ch is None else in_ch
        down = [nn.Conv2d(in_ch, inner, 4, stride=2, padding=1)]
        if outermost:
            up = [nn.ReLU(True), *_unet_upsample(upsample, inner * 2, outer), nn.Tanh()]
            layers = down + [submodule] + up
        elif innermost:
            up = [nn.ReLU(True), *_unet_upsample(upsample, inner, outer), *_decoder_norm(norm, outer, style_dim)]
            layers = [nn.LeakyReLU(0.2, True)] + down + up
        else:
            down = [nn.LeakyReLU(0.2, True)] + down + [_norm(norm, inner)]
            up = [nn.ReLU(True), *_unet_upsample(upsample, inner * 2, outer), *_decoder_norm(norm, outer, style_dim)]
            layers = down + [submodule] + up + ([nn.Dropout(0.5)] if dropout else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 levels (7 for 128 px inputs, 8 for 256 px).

    Level widths double from ``ngf`` up to ``ngf * max_mult`` (8 in the reference code: 512 channels at ngf 64
    from 8x8 down to 1x1). Those deepest levels hold 80% of the parameters and almost none of the FLOPs, and
    their weight-bound convolutions take half of a CPU training step: ``max_mult`` 4 makes them 4x narrower
    (README "Speed", the default generator's cost)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, num_downs: int = 8,
                 norm: str = "instance", dropout: bool = False, upsample: str = "deconv", style_dim: int = 0,
                 max_mult: int = 8):
        super().__init__()
        up = {"norm": norm, "upsample": upsample, "style_dim": style_dim}
        deepest = ngf * min(8, max_mult)
        block = UnetBlock(deepest, deepest, innermost=True, **up)
        for _ in range(num_downs - 5):
            block = UnetBlock(deepest, deepest, submodule=block, dropout=dropout, **up)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * min(mult, max_mult), ngf * min(mult * 2, max_mult), submodule=block, **up)
        self.model = UnetBlock(out_ch, ngf, in_ch=in_ch, submodule=block, outermost=True, **up)  # no norm: no FiLM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last pays for the U-Net in bf16 inference only (translation 1.2-1.4x); its training steps and
        # its fp32 run faster in NCHW (README "Speed")
        bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return self.model(cpu_channels_last(x) if bf16 and not torch.is_grad_enabled() else x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake logits, one per overlapping patch (70x70 for ``n_layers=3``)."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [sn(nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1)),
                       _norm(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(sn(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(cpu_channels_last(x))


class MultiscalePatchDiscriminator(nn.Module):
    """Two PatchGANs, on the image and on a 2x downsampled copy (Wang et al. 2018, pix2pixHD): the coarse
    one sees twice the context for the same depth. The logit maps are flattened and concatenated into one
    (N, patches) tensor, so every GAN loss (a mean over logits) and the R1 penalty apply unchanged."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_ch, ndf, n_layers, norm, spectral_norm) for _ in range(2))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine, coarse = self.scales[0](x), self.scales[1](self.down(x))
        return torch.cat([fine.flatten(1), coarse.flatten(1)], dim=1)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN (pixelGAN in the reference code): judges per-pixel colour statistics only."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 spectral_norm: bool = False):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.model = nn.Sequential(
            sn(nn.Conv2d(in_ch, ndf, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ndf, ndf * 2, 1)), _norm(norm, ndf * 2), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(ndf * 2, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass(frozen=True)
class Entry:
    build: Callable[..., nn.Module]
    size_multiple: int  # input height and width must be multiples of this


GENERATORS: dict[str, Entry] = {  # built with ngf, norm, dropout, upsample, style_dim and max_mult (U-Nets only)
    "resnet_9blocks": Entry(lambda max_mult, **kw: ResnetGenerator(n_blocks=9, **kw), 4),
    "resnet_6blocks": Entry(lambda max_mult, **kw: ResnetGenerator(n_blocks=6, **kw), 4),
    "unet_128": Entry(lambda **kw: UnetGenerator(num_downs=7, **kw), 128),
    "unet_256": Entry(lambda **kw: UnetGenerator(num_downs=8, **kw), 256),
}

DISCRIMINATORS: dict[str, Entry] = {
    "patch": Entry(PatchDiscriminator, 1),
    "multiscale": Entry(MultiscalePatchDiscriminator, 1),
    "pixel": Entry(PixelDiscriminator, 1),
}


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights as in the reference code: N(0, gain), Xavier, Kaiming or orthogonal."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            # spectral norm keeps the raw weight as a parametrization's `original`
            weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            if kind == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            elif kind == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain)
            else:
                raise ValueError(f"unknown init type '{kind}'")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def build_generator(model_cfg, vgg_weights: str = "random") -> nn.Module:
    """A generator from a ``ModelConfig`` (or anything with its attributes), initialised; a
    :class:`StyledGenerator` around it when ``model.style_code`` is not ``none``. ``vgg_weights`` (``loss.vgg_weights``)
    are the VGG's of a ``vgg`` style encoder: training passes them; a model loaded from a file takes them from the
    file's state (a strict load), so everything else builds with random ones."""
    style_code = getattr(model_cfg, "style_code", "none")
    style_dim = model_cfg.style_dim if style_code != "none" else 0
    net = GENERATORS[model_cfg.generator].build(ngf=model_cfg.ngf, norm=model_cfg.norm, dropout=model_cfg.dropout,
                                                upsample=model_cfg.upsample, style_dim=style_dim,
                                                max_mult=getattr(model_cfg, "unet_max_mult", 8))
    net = init_weights(net, model_cfg.init, model_cfg.init_gain)
    if style_code != "none":
        input_norm = model_cfg.style_input == "normalized"
        encoder = (VGGStyleEncoder(style_dim, vgg_weights, input_norm) if style_code == "vgg"
                   else StyleEncoder(style_dim, input_norm=input_norm))
        net = StyledGenerator(net, encoder, style_dim)
        for film in net.films():
            film.lr_mult = model_cfg.film_lr_mult
        # no norm layers in the encoder: N(0, 0.02) would shrink its activations by ~100x per layer
        init_weights(net.encoder.head if style_code == "vgg" else net.encoder, "kaiming")
    return net


def is_styled(net: nn.Module) -> bool:
    return isinstance(net, StyledGenerator)


def build_discriminator(model_cfg) -> nn.Module:
    net = DISCRIMINATORS[model_cfg.discriminator].build(ndf=model_cfg.ndf, n_layers=model_cfg.d_layers,
                                                        norm=model_cfg.norm, spectral_norm=model_cfg.spectral_norm)
    return init_weights(net, model_cfg.init, model_cfg.init_gain)
