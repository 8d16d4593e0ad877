"""Deployable generators: TorchScript and ONNX files from a run folder or generator export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cyclestyle import nets
from cyclestyle.checkpoint import CheckpointError
from cyclestyle.translate import load_generator


class _CodedGenerator(nn.Module):
    """A style-coded generator as a function of two inputs, (image, code), for tracing."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.net(image, style=code)


def export_model(checkpoint_path: str | Path, output: str | Path, fmt: str = "onnx", direction: str = "a2b",
                 example_size: tuple[int, int] = (256, 256), dynamic: bool = True, opset: int = 17,
                 checkpoint_b: str | Path | None = None) -> Path:
    """Write the ``direction`` generator as TorchScript (``.pt``) or ONNX, input/output (N,3,H,W) in [-1, 1].

    With ``dynamic``, ONNX batch, height and width are free (they must be multiples of the generator's
    ``size_multiple``, stored in the file's metadata, 4 for ResNet generators); TorchScript is always dynamic.
    ``checkpoint_path`` is anything ``cyclestyle translate`` takes, ``checkpoint_b`` a reference G_B file.
    A style-coded model (model.style_code) takes a second input, ``code`` (N or 1, style_dim); its mean code
    (the domain's average style) is stored in the file's metadata as ``mean_code`` (a JSON list).
    """
    net, meta = load_generator(checkpoint_path, direction, checkpoint_b)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example: tuple[torch.Tensor, ...] = (torch.zeros(1, 3, *example_size),)
    extra = {"size_multiple": str(meta["size_multiple"])}
    names = ["image"]
    if nets.is_styled(net):
        net = _CodedGenerator(net).eval()
        example = (*example, net.net.mean_code[None].clone())
        extra["mean_code"] = json.dumps([round(v, 7) for v in net.net.mean_code.tolist()])
        names.append("code")
    if fmt == "torchscript":
        with warnings.catch_warnings():  # tracer notes about shape checks inside instance norm: benign here
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example, check_trace=False)
            torch.jit.save(traced, str(output), _extra_files=extra)
    elif fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise CheckpointError("ONNX export needs the onnx package: pip install onnx") from None
        axes = {"image": {0: "batch", 2: "height", 3: "width"}, "translated": {0: "batch", 2: "height", 3: "width"},
                "code": {0: "batch"}}
        # The TorchScript-based exporter: it needs only `onnx` (the dynamo one also needs onnxscript) and
        # handles this all-convolutional net fully; its deprecation and constant-folding notes are noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, example, str(output), input_names=names, output_names=["translated"],
                              dynamic_axes={k: v for k, v in axes.items() if k in (*names, "translated")}
                              if dynamic else None, opset_version=opset, dynamo=False)
        model = onnx.load(str(output))
        for key, value in extra.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(output))
    else:
        raise ValueError(f"format must be onnx or torchscript, got {fmt!r}")
    return output
