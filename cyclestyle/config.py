"""Typed configuration: dataclass schema -> YAML file -> dotted CLI overrides (``train.lr=1e-4``).

The schema's defaults are the recipe of ``configs/base.yaml`` (a test keeps the two in step). Every
mistake a user can make in a config (unknown key, wrong type, value out of range, missing folder)
becomes one :class:`ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user mistake in a config file or override; the message names the key and what to do."""


@dataclass
class DataConfig:
    root_a: str = MISSING  # folder of domain A images (e.g. photos), searched recursively
    root_b: str = MISSING  # folder of domain B images (e.g. paintings)
    load_size: int = 286  # images are resized to this before the random crop
    crop_size: int = 256  # training crop (square)
    resize: str = "square"  # square: load_size x load_size (reference CycleGAN); shorter_side: keep aspect
    flip: bool = True  # random horizontal flip
    num_workers: int = 2  # DataLoader worker processes (0 = load in the main process)


# The model keys that runs and exports saved before them were made with: the values to read where a saved
# config lacks the key (resume's comparison, loading an export), whatever today's defaults are.
LEGACY_MODEL = {"upsample": "deconv", "unet_max_mult": 8,  # unet_max_mult came in with 8, now defaults to 2
                "style_input": "image", "film_lr_mult": 1.0}


@dataclass
class ModelConfig:
    generator: str = "unet_128"  # see cyclestyle.nets.GENERATORS; chosen on the ground-truth benchmark (README)
    ngf: int = 64  # generator width (filters in the first conv)
    discriminator: str = "patch"  # see cyclestyle.nets.DISCRIMINATORS
    ndf: int = 64  # discriminator width
    d_layers: int = 3  # PatchGAN depth; 3 gives the 70x70 receptive field
    norm: str = "instance"  # instance | none
    upsample: str = "deconv"  # generator decoder: resize (nearest x2 + conv) | deconv (transposed conv)
    unet_max_mult: int = 2  # U-Net: widest level = ngf * this (8: the reference's 512 channels at ngf 64)
    spectral_norm: bool = False  # spectral normalisation on every discriminator conv
    dropout: bool = False  # dropout in generator blocks
    style_code: str = "none"  # none (CycleGAN) | learned | vgg: a style encoder and a decoder modulated by its code
    style_dim: int = 8  # length of a style code (style_code learned or vgg)
    style_input: str = "image"  # what the style encoder sees: image | normalized (channel mean and spread removed)
    film_lr_mult: float = 1.0  # learning-rate multiplier of the decoder's code modulation (FiLM), StyleGAN-style
    init: str = "normal"  # normal | xavier | kaiming | orthogonal
    init_gain: float = 0.02


@dataclass
class LossConfig:
    gan_mode: str = "lsgan"  # lsgan | vanilla | hinge
    lambda_cycle: float = 10.0  # cycle-consistency L1 weight (CycleGAN paper)
    lambda_identity: float = 0.25  # identity weight, as a fraction of lambda_cycle (paper: 0.5; see README)
    # One direction's cycle weight (None = lambda_cycle), the reference's --lambda_A / --lambda_B: cycle_a weighs
    # A->B->A, cycle_b B->A->B, and each generator's identity is lambda_identity times the cycle weight of the
    # domain it translates into (G_ab's: lambda_cycle_b), as there.
    lambda_cycle_a: Optional[float] = None
    lambda_cycle_b: Optional[float] = None
    style_ab: float = 0.0  # weight of the scale-free VGG Gram style loss on A->B (0 = off); see README, "Style loss"
    style_ba: float = 0.0  # the same on B->A (0 = off)
    # Style target: mean = running mean of the target domain's Grams; batch = the Gram of the real target-domain
    # image of the same step (fake i vs real i). Both aim at the same mean in expectation (squared error); batch
    # weights images by 1 / their Gram energy and is noisier, mean keeps state (saved, all-reduced under DDP).
    style_target: str = "mean"
    style_reference: Optional[str] = None  # one painting whose Gram is the A->B target, whatever style_target says
    vgg_weights: str = "imagenet"  # imagenet (torchvision download/cache) | path to a .pth | random (tests only)
    r1_gamma: float = 0.0  # zero-centred gradient penalty on D's real inputs (0 = off)
    lambda_code: float = 0.1  # style-coded models: L1 between the code read back from a translation and the code
    # it was made with (README, "Style codes": measured at 0, 0.1 and, with a style loss, 1.0)
    # Style-coded models: in training the encoder reads each real image with its colours turned about the grey
    # axis by a random angle, so that a code cannot carry the palette of the image it was read from
    code_hue_jitter: bool = False


@dataclass
class TrainConfig:
    run_dir: str = "runs/cyclestyle"  # everything a run writes goes here
    steps: int = 200000  # total optimizer steps
    decay_steps: int = 100000  # the last decay_steps decay the LR linearly to 0
    batch_size: int = 1  # per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2.0e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int = 50  # history of generated images shown to D (Shrivastava et al. 2017); 0 = off
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16 (auto: bf16 where the hardware has it)
    cpu: bool = False  # force CPU even when a GPU is present
    compile: bool = False  # torch.compile the networks (slow first step; falls back to eager on errors)
    deterministic: bool = False  # GPU: deterministic kernels, no cuDNN autotuning (slower, exact resume); CPU is exact
    ema: bool = False  # keep an exponential moving average of generator weights
    ema_decay: float = 0.999  # per step, warmed up: min(ema_decay, (1 + step) / (10 + step))
    seed: int = 0
    log_every: int = 50  # scalars to tensorboard and the progress bar
    image_every: int = 500  # image grids to tensorboard
    checkpoint_every: int = 2000  # full training state, for resume
    keep_checkpoints: int = 3  # newest checkpoints kept on disk


@dataclass
class ValidationConfig:
    every: int = 0  # FID/KID of a fixed validation subset every N steps (0 = off)
    root_a: Optional[str] = None  # held-out domain A images (source of a2b, reference of b2a)
    root_b: Optional[str] = None  # held-out domain B images (reference of a2b, source of b2a)
    num_images: int = 50  # the first N images (sorted paths) of each folder: the same subset every time
    direction: str = "a2b"  # a2b | b2a | both: which translations are scored
    metric: str = "fid"  # fid | kid: what `best` is chosen by (lower is better; mean over the directions)
    # FID Inception weights file (null: $CYCLESTYLE_INCEPTION_WEIGHTS or torch hub cache)
    inception_weights: Optional[str] = None
    batch_size: int = 8  # images per generator / Inception forward


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


CHOICES = {
    "data.resize": ("square", "shorter_side"),
    "model.norm": ("instance", "none"),
    "model.upsample": ("resize", "deconv"),
    "model.style_code": ("none", "learned", "vgg"),
    "model.style_input": ("image", "normalized"),
    "model.init": ("normal", "xavier", "kaiming", "orthogonal"),
    "loss.gan_mode": ("lsgan", "vanilla", "hinge"),
    "loss.style_target": ("mean", "batch"),
    "train.mixed_precision": ("auto", "no", "fp16", "bf16"),
    "validation.direction": ("a2b", "b2a", "both"),
    "validation.metric": ("fid", "kid"),
}


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    first = str(err).splitlines()[0]
    return f"config key '{key}': {first}" if key else first


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Schema defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    layers: list[Any] = [OmegaConf.structured(Config)]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # YAML syntax errors come in many types
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=1e-4)")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err)) from None
    return to_config(merged)


def to_config(conf: DictConfig) -> Config:
    """Validated :class:`Config` from an OmegaConf object (raises ConfigError)."""
    try:
        cfg = OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        message = _omegaconf_message(err)
        if "issing mandatory value" in message:
            key = getattr(err, "full_key", "?")
            message = f"config key '{key}' is not set: pass {key}=... on the command line or in the YAML file"
        raise ConfigError(message) from None
    # YAML 1.1 reads a bare `no` as false, which omegaconf turns into the string "False": take the
    # user's meaning rather than failing on `train.mixed_precision=no`.
    if cfg.train.mixed_precision in ("False", "false"):
        cfg.train.mixed_precision = "no"
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Range and consistency checks that a type schema cannot express."""
    from cyclestyle import nets  # local import: nets imports torch, config should stay light

    def fail(key: str, why: str) -> None:
        raise ConfigError(f"config key '{key}': {why}")

    for key, allowed in CHOICES.items():
        value = get(cfg, key)
        if value not in allowed:
            fail(key, f"'{value}' is not one of {', '.join(allowed)}")
    if cfg.model.generator not in nets.GENERATORS:
        fail("model.generator", f"'{cfg.model.generator}' is not one of {', '.join(nets.GENERATORS)}")
    if cfg.model.discriminator not in nets.DISCRIMINATORS:
        fail("model.discriminator", f"'{cfg.model.discriminator}' is not one of {', '.join(nets.DISCRIMINATORS)}")

    positive = ["data.load_size", "data.crop_size", "model.ngf", "model.ndf", "model.d_layers", "model.style_dim",
                "model.film_lr_mult", "train.steps",
                "train.batch_size", "train.grad_accum", "train.lr", "train.log_every", "train.image_every",
                "train.checkpoint_every", "train.keep_checkpoints", "validation.batch_size"]
    non_negative = ["data.num_workers", "model.init_gain", "loss.lambda_cycle", "loss.lambda_identity",
                    "loss.style_ab", "loss.style_ba", "loss.r1_gamma", "loss.lambda_code", "train.decay_steps",
                    "train.pool_size", "loss.lambda_cycle_a", "loss.lambda_cycle_b",  # these two: None = lambda_cycle
                    "validation.every"]
    for key in positive:
        if not get(cfg, key) > 0:
            fail(key, f"must be > 0, got {get(cfg, key)}")
    for key in non_negative:
        value = get(cfg, key)
        if value is not None and not value >= 0:
            fail(key, f"must be >= 0, got {value}")
    for key in ("train.beta1", "train.beta2", "train.ema_decay"):
        if not 0.0 <= get(cfg, key) < 1.0:
            fail(key, f"must be in [0, 1), got {get(cfg, key)}")
    if cfg.model.unet_max_mult not in (1, 2, 4, 8):
        fail("model.unet_max_mult", f"must be 1, 2, 4 or 8 (the widest U-Net level is ngf times this), "
             f"got {cfg.model.unet_max_mult}")
    if cfg.train.decay_steps > cfg.train.steps:
        fail("train.decay_steps", f"({cfg.train.decay_steps}) cannot exceed train.steps ({cfg.train.steps})")
    if cfg.data.crop_size > cfg.data.load_size:
        fail("data.crop_size", f"({cfg.data.crop_size}) cannot exceed data.load_size ({cfg.data.load_size}); "
             "images are resized to load_size, then cropped")
    multiple = nets.GENERATORS[cfg.model.generator].size_multiple
    if cfg.data.crop_size % multiple:
        fail("data.crop_size", f"{cfg.model.generator} needs a multiple of {multiple}, got {cfg.data.crop_size}")
    if cfg.loss.style_reference is not None and cfg.loss.style_ab > 0 and not Path(cfg.loss.style_reference).is_file():
        fail("loss.style_reference", f"file not found: {cfg.loss.style_reference}")
    if cfg.model.style_code != "none" and cfg.loss.style_reference is not None and cfg.loss.style_ab > 0:
        fail("loss.style_reference", "does not apply to a style-coded model (model.style_code="
             f"{cfg.model.style_code}): each translation follows its own style image; give one at translation "
             "time with cyclestyle translate --style-image")
    if cfg.loss.code_hue_jitter and cfg.model.style_code == "none":
        fail("loss.code_hue_jitter", "turns the colours of the images a style encoder reads: it needs "
             "model.style_code=learned or vgg (or loss.code_hue_jitter=false)")
    if cfg.validation.every:
        for key in ("validation.root_a", "validation.root_b"):
            if not get(cfg, key):
                fail(key, f"is not set, but validation.every={cfg.validation.every} needs it: pass a folder of "
                     "held-out images (or validation.every=0 to turn validation off)")
        if cfg.validation.num_images < 2:
            fail("validation.num_images", f"FID/KID need at least 2 images, got {cfg.validation.num_images}")


def get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(to_yaml(cfg))


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Lines ``key: old -> new`` for every leaf that differs between two nested dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff(a, b, name + ".")
        elif a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines
