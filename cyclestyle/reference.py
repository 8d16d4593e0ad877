"""Generators of the reference CycleGAN implementation (junyanz/pytorch-CycleGAN-and-pix2pix) in cyclestyle.

A reference generator file (``latest_net_G_A.pth``, a published ``style_monet.pth``) is a plain
``state_dict`` pickled by ``torch.save``. It is read with ``weights_only=True``: a file that references
anything but tensors and plain containers is refused and nothing in it runs. Its architecture is inferred
from key names and shapes, written down here from the reference's ``models/networks.py``:

- ``ResnetGenerator``: ``model.1`` is the first 7x7 conv (ngf, in, 7, 7); ``model.4`` and ``model.7`` the
  stride-2 convs; residual blocks ``model.10 ..`` each with convs ``conv_block.1`` and ``conv_block.5``
  (``conv_block.6`` with dropout, which shifts the second conv); two 3x3 transposed convs; the last 7x7
  conv. cyclestyle's ``nets.ResnetGenerator`` has the same indices; its blocks call the Sequential ``block``.
- ``UnetGenerator``: nested blocks, ``model.model.0`` (4x4 conv, ngf, in), ``model.model.1.model.1``, ...;
  ``cyclestyle.nets.UnetGenerator`` uses the very same key names. Depth 7 is unet_128, 8 is unet_256.
  Dropout adds no weights in a U-Net, and translation runs in eval mode, so it is not inferred there.
- Instance norm without affine parameters holds no tensors. Files from before torch 0.4 (among them the
  published models) carry ``running_mean`` / ``running_var`` / ``num_batches_tracked`` for those layers,
  which the reference drops on load: so does :func:`convert`. A ``norm_layer`` of ``none`` writes convs
  without bias (``use_bias`` follows instance norm in the reference); cyclestyle's convs always have one,
  filled with zeros.

One reference file is one direction. A pair (``G_A`` translates A to B, ``G_B`` B to A) becomes both
directions of one cyclestyle generators file; :func:`import_reference` writes it, recording the source
files and their sha256 in its metadata.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from cyclestyle.checkpoint import EXPORT_FORMAT, CheckpointError, save_generators
from cyclestyle.config import ModelConfig
from cyclestyle.download import sha256_of

REFERENCE_REPO = "junyanz/pytorch-CycleGAN-and-pix2pix"
NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.(weight|bias)$")
_EPOCH_FILE = re.compile(r"^(latest|\d+)_net_(G|G_A|G_B)\.pth$")


def is_reference_file(path: str | Path) -> bool:
    """A ``.pth`` / ``.pt`` file: what the reference writes (cyclestyle writes safetensors)."""
    path = Path(path)
    return path.suffix in (".pth", ".pt") and not path.is_dir()


def reference_folder_files(folder: str | Path) -> dict[str, Path] | None:
    """``{"a2b": G_A file, "b2a": G_B file}`` (or ``{"a2b": G file}``) of a reference checkpoint folder
    (``checkpoints/NAME/``), preferring ``latest_`` over the highest epoch; None if it has none."""
    found: dict[str, dict[str, Path]] = {}
    for child in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _EPOCH_FILE.match(child.name)
        if match:
            found.setdefault(match.group(2), {})[match.group(1)] = child

    def newest(name: str) -> Path | None:
        epochs = found.get(name)
        if not epochs:
            return None
        if "latest" in epochs:
            return epochs["latest"]
        return epochs[max(epochs, key=int)]

    if newest("G_A"):
        pair = {"a2b": newest("G_A")}
        if newest("G_B"):
            pair["b2a"] = newest("G_B")
        return pair
    if newest("G"):
        return {"a2b": newest("G")}
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a reference ``.pth``, unpickled with ``weights_only=True`` (nothing else is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reference generator file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global that is not a tensor or plain container, before calling it
        found = re.search(r"GLOBAL ([\w.]+)", str(err))  # torch's wording varies between versions
        if found:
            raise CheckpointError(f"{path} references code ({found.group(1)}), not only tensors; it was refused and "
                                  "nothing in it was run. Only load generator files from sources you trust") from None
        why = re.search(r"WeightsUnpickler error: (.*)", str(err).replace("\n\n", " "))
        detail = why.group(1).strip() if why else "unpickling failed"
        raise CheckpointError(f"{path} is not a readable torch file ({detail})") from None
    except Exception as err:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"{path} is not a readable torch file ({str(err).splitlines()[0]})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # some training scripts wrap the state_dict
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a generator state_dict of tensors")
    # DataParallel-wrapped networks saved without .module prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items()}


def _describe(state: Mapping[str, torch.Tensor], limit: int = 4) -> str:
    keys = list(state)
    shown = ", ".join(f"{k} {tuple(state[k].shape)}" for k in keys[:limit])
    return f"{len(keys)} tensors ({shown}{', ...' if len(keys) > limit else ''})"


def infer_model(state: Mapping[str, torch.Tensor], source: str | Path = "state_dict") -> ModelConfig:
    """The cyclestyle ``ModelConfig`` of a reference generator ``state_dict`` (raises CheckpointError)."""
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{source}: {why}; found {_describe(state)}")

    first = state.get("model.1.weight") if "model.1.weight" in state else state.get("model.model.0.weight")
    if first is None or first.dim() != 4:
        raise refuse("not a reference CycleGAN generator (expected ResnetGenerator keys model.1.weight, "
                      "model.N.conv_block.M.weight, or UnetGenerator keys model.model.0.weight)")
    ngf, in_ch = first.shape[:2]
    if in_ch != 3:
        raise refuse(f"the generator takes {in_ch}-channel input; cyclestyle translates RGB (3 channels)")
    # the reference gives convs a bias exactly when the norm is instance norm (use_bias)
    norm = "instance" if ("model.1.bias" in state or "model.model.0.bias" in state) else "none"
    if any(k.endswith(".weight") and state[k].dim() == 1 for k in state):
        raise refuse("normalisation layers with parameters (batch norm or affine instance norm); cyclestyle builds "
                     "instance norm without parameters, the reference CycleGAN default (--norm instance)")
    if "model.1.weight" in state:
        blocks: dict[int, set[int]] = {}
        for key in state:
            match = _BLOCK_KEY.match(key)
            if match:
                blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
        if not blocks:
            raise refuse("a ResNet generator without residual blocks (no model.N.conv_block keys)")
        n_blocks = len(blocks)
        if sorted(blocks) != list(range(10, 10 + n_blocks)) or n_blocks not in (6, 9):
            raise refuse(f"{n_blocks} residual blocks at model.{min(blocks)}..{max(blocks)}; cyclestyle builds "
                         "resnet_6blocks and resnet_9blocks (model.10 onwards)")
        layouts = {frozenset(convs) for convs in blocks.values()}
        if layouts == {frozenset({1, 5})}:
            dropout = False
        elif layouts == {frozenset({1, 6})}:
            dropout = True
        else:
            raise refuse("residual blocks with convs at conv_block." + " / ".join(
                ",".join(map(str, sorted(s))) for s in layouts) + " (expected 1,5, or 1,6 with dropout)")
        generator = f"resnet_{n_blocks}blocks"
    else:
        depth = max(key.split(".")[:-1].count("model") for key in state) - 1
        if depth not in (7, 8):
            raise refuse(f"a U-Net with {depth} levels; cyclestyle builds unet_128 (7) and unet_256 (8)")
        generator, dropout = f"unet_{2 ** depth}", False
    return ModelConfig(generator=generator, ngf=int(ngf), norm=norm, dropout=dropout, upsample="deconv",
                       unet_max_mult=8)


def convert(state: Mapping[str, torch.Tensor], source: str | Path = "state_dict"
            ) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(model config, the weights under cyclestyle's key names), checked against a built network."""
    from cyclestyle import nets

    model_cfg = infer_model(state, source)
    converted = {key.replace(".conv_block.", ".block."): value for key, value in state.items()
                 if key.rsplit(".", 1)[-1] not in NORM_STATS}  # stray instance-norm statistics (pre-0.4 files)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = nets.build_generator(model_cfg).state_dict()
    if model_cfg.norm == "none":  # the reference writes these convs without bias: zeros are the same function
        for key, value in expected.items():
            if key.endswith(".bias") and key not in converted:
                converted[key] = torch.zeros(value.shape)  # value is a meta tensor: shape only
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    wrong = [f"{k} {tuple(converted[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in converted and converted[k].shape != v.shape]
    problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
        ([f"unexpected {', '.join(unexpected[:3])}"] if unexpected else []) + \
        ([f"wrong shape {', '.join(wrong[:2])}"] if wrong else [])
    if problems:
        raise CheckpointError(f"{source}: looks like a reference {model_cfg.generator} (ngf {model_cfg.ngf}) but "
                              f"does not fit it: {'; '.join(problems)}")
    return model_cfg, {k: v.float().contiguous() for k, v in converted.items()}


def resolve_sources(path: str | Path, path_b: str | Path | None = None) -> dict[str, Path]:
    """``{"a2b": file[, "b2a": file]}`` from a reference file (plus ``path_b``) or a reference folder."""
    path = Path(path)
    if path.is_dir():
        files = reference_folder_files(path)
        if files is None:
            raise CheckpointError(f"{path} holds no reference generator files (*_net_G_A.pth, *_net_G.pth)")
        if path_b is not None:
            raise CheckpointError(f"--checkpoint-b {path_b}: {path} is a folder that already names both "
                                  "generators; pass one or the other")
        return files
    files = {"a2b": path}
    if path_b is not None:
        if not is_reference_file(path_b):
            raise CheckpointError(f"--checkpoint-b {path_b}: expected a reference generator .pth file")
        files["b2a"] = Path(path_b)
    return files


def read_reference(path: str | Path, path_b: str | Path | None = None
                   ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Like ``checkpoint.read_generators``: weights per generator (``gen_ab``, ``gen_ba`` where given) and
    metadata (``model`` as a dict, ``source``: each direction's file and sha256)."""
    files = resolve_sources(path, path_b)
    weights, configs, source = {}, {}, {}
    for direction, file in files.items():
        configs[direction], weights["gen_ab" if direction == "a2b" else "gen_ba"] = \
            convert(read_state_dict(file), file)
        source[direction] = {"file": str(file), "sha256": sha256_of(file)}
    if len({dataclasses.astuple(c) for c in configs.values()}) > 1:
        a, b = configs["a2b"], configs["b2a"]
        raise CheckpointError(f"{files['a2b']} is {a.generator} (ngf {a.ngf}) but {files['b2a']} is {b.generator} "
                              f"(ngf {b.ngf}): one generators file holds one architecture; import them separately")
    model = dataclasses.asdict(next(iter(configs.values())))
    meta = {"format": EXPORT_FORMAT, "model": model, "step": "0", "ema": "false",
            "imported_from": REFERENCE_REPO, "source": source}
    return weights, meta


def import_reference(path: str | Path, output: str | Path, path_b: str | Path | None = None,
                     extra: dict | None = None) -> tuple[Path, dict]:
    """Write the reference generator(s) at ``path`` (and ``path_b``) as a cyclestyle generators file."""
    from cyclestyle import nets

    weights, meta = read_reference(path, path_b)
    generators = {}
    for name, state in weights.items():
        generators[name] = nets.build_generator(ModelConfig(**meta["model"]))
        generators[name].load_state_dict(state)
    info = {key: meta[key] for key in ("imported_from", "source")}
    written = save_generators(output, generators, meta["model"], step=0, ema=False, extra={**info, **(extra or {})})
    return written, meta
