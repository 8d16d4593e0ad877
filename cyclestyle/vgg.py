"""Frozen VGG-19 features and Gram matrices: the style machinery shared by training and stylisation.

Pretrained weights cannot always be downloaded (offline machines, clusters without internet), so the
loader takes ``imagenet`` (torchvision's download/cache), a local file, or ``random`` (tests only) and
fails with a message that says where to put the file. It never falls back to random weights by itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

# Index of each named ReLU in torchvision's vgg19().features.
VGG19_RELU = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8,
    "relu3_1": 11, "relu3_2": 13, "relu3_3": 15, "relu3_4": 17,
    "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26,
    "relu5_1": 29, "relu5_2": 31, "relu5_3": 33, "relu5_4": 35,
}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # Gatys et al. 2016
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
TORCHVISION_URL = f"https://download.pytorch.org/models/{TORCHVISION_FILE}"


class VGGWeightsError(RuntimeError):
    """The pretrained VGG-19 weights could not be had; the message says how to provide them."""


def _hub_checkpoint_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


# What needs the weights (error messages name it) -> how to do without them. Only training can do without VGG;
# `cyclestyle stylize` cannot, so no such hint there.
USERS = {
    "the style loss": "turn the style loss off with loss.style_ab=0 loss.style_ba=0",
    "model.style_code=vgg": "use model.style_code=learned (a style encoder trained from scratch, no pretrained "
                            "weights)",
    "cyclestyle stylize": None,
}


def _missing_message(cause: str, option: str = "loss.vgg_weights", needed_by: str = "the style loss") -> str:
    off = f", or {USERS[needed_by]}" if USERS[needed_by] else ""
    return (f"the VGG-19 ImageNet weights needed by {needed_by} could not be loaded ({cause}). "
            f"Either download {TORCHVISION_URL} on a machine with internet and put it at "
            f"{_hub_checkpoint_path()} (or anywhere, and pass {option}=/path/to/{TORCHVISION_FILE}){off}.")


def load_vgg19_features(weights: str = "imagenet", option: str = "loss.vgg_weights",
                        needed_by: str = "the style loss") -> nn.Sequential:
    """``torchvision.models.vgg19().features`` with ``weights`` = imagenet | a file path | random.

    ``option`` is the setting through which the user chose ``weights`` and ``needed_by`` (a key of ``USERS``)
    what they are for; error messages name both.
    """
    from torchvision.models import VGG19_Weights, vgg19

    if weights == "random":
        return _vgg19_features()
    if weights == "imagenet":
        try:
            return vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features
        except Exception as err:  # URLError, HTTPError, hash mismatch, truncated cache file...
            raise VGGWeightsError(_missing_message(f"{type(err).__name__}: {err}", option, needed_by)) from None
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise VGGWeightsError(_missing_message(f"{option} file not found: {path}", option, needed_by))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise VGGWeightsError(f"{option} file {path} is not a loadable state_dict: {err}") from None
    # Accept torchvision's full-model file ("features.0.weight", "classifier...") or features only.
    features_state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    features = _vgg19_features()
    try:
        features.load_state_dict(features_state)
    except RuntimeError as err:
        raise VGGWeightsError(f"{option} file {path} does not hold VGG-19 weights: "
                              f"{str(err).splitlines()[0]}") from None
    return features


def _vgg19_features() -> nn.Sequential:
    """``vgg19(weights=None).features`` with torchvision's own initialisation of its convolutions, built without
    the classifier: its 120 M parameters are never used here and took 2.4 s of every random init (most of the
    test suite's VGG time)."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return features


class VGGFeatures(nn.Module):
    """Frozen VGG-19 returning the activations at ``layers`` for images in [-1, 1]."""

    def __init__(self, weights: str = "imagenet", layers: tuple[str, ...] = STYLE_LAYERS,
                 option: str = "loss.vgg_weights", needed_by: str = "the style loss"):
        super().__init__()
        for name in layers:
            if name not in VGG19_RELU:
                raise ValueError(f"unknown VGG-19 layer '{name}'; known: {', '.join(VGG19_RELU)}")
        self.layers = tuple(layers)
        self._index = {VGG19_RELU[name]: name for name in layers}
        # Only the convolutions up to the deepest requested layer are kept (and run).
        self.features = load_vgg19_features(weights, option, needed_by)[: max(self._index) + 1]
        self.features.eval().requires_grad_(False)
        self.channels = [self.features[VGG19_RELU[name] - 1].out_channels for name in layers]  # conv before ReLU
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # always eval: it is a fixed feature extractor

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._index:
                out[self._index[i]] = x
        return out

    def grams(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Gram matrix of each layer, in ``self.layers`` order, each (N, C, C) in fp32."""
        feats = self(x)
        return [gram_matrix(feats[name]) for name in self.layers]

    def grams_and_features(self, x: torch.Tensor, gram_layers: tuple[str, ...] | None = None
                           ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """One forward pass: the Grams of ``gram_layers`` (default: all layers), in that order, and the raw
        activations of every layer (for a content loss beside the style loss, as in ``cyclestyle.stylize``)."""
        feats = self(x)
        return [gram_matrix(feats[name]) for name in (gram_layers or self.layers)], feats


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C), normalised by C*H*W, computed in fp32 even under autocast.

    fp32 because the Gram sums H*W products: in bf16 (8 bits of mantissa) the sum loses the small
    differences between styles that the loss is meant to see.
    """
    n, c, h, w = feat.shape
    with torch.autocast(device_type=feat.device.type, enabled=False):
        f = feat.float().reshape(n, c, h * w)
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)
