"""Checkpoints (full training state, for exact resume) and generators files (weights only, for translation).

Layout of a run folder::

    run_dir/config.yaml                      resolved config of the run (the one in force now)
    run_dir/config_changes.log               what each resume changed, with its step (cyclestyle.resume)
    run_dir/checkpoints/step-0002000/        accelerator.save_state() + our own state files
    run_dir/generators/last.safetensors      both generators + model config, no pickled code
    run_dir/tb/                              tensorboard events

A checkpoint is written to a hidden ``.step-NNNNNNN.tmp`` folder and renamed into place when complete,
so a crash mid-save leaves the previous checkpoints untouched and never a half-written ``step-`` folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINT_RE = re.compile(r"^step-(\d{7,})$")
TRAINER_STATE = "trainer_state.json"
SHARED_STATE = "shared_state.pt"  # EMA generators, style targets: identical on every process
EXPORT_FORMAT = "cyclestyle-generators"


class CheckpointError(RuntimeError):
    """A checkpoint or generators file that cannot be used; the message names the file and what to do."""


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Completed checkpoints of a run, oldest first, as (step, folder)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = CHECKPOINT_RE.match(child.name)
        if match and (child / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_resume(run_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: ``latest`` (None if the run has none yet) or an explicit path."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise CheckpointError(f"--resume {resume}: not a checkpoint folder (no {TRAINER_STATE} in it); "
                              f"pass a folder like {checkpoints_dir(run_dir)}/step-0001000 or --resume latest")
    return path


def rank_state_name(rank: int) -> str:
    return f"rank_state_{rank}.pt"


def _fsync_tree(folder: Path) -> None:
    # A rename is only atomic across a power cut if the data it points to reached the disk first.
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def save_checkpoint(accelerator, run_dir: str | Path, step: int, shared_state: dict, rank_state: dict,
                    trainer_state: dict, keep: int) -> Path:
    """Write the full training state for ``step`` atomically; prune to the newest ``keep``. All ranks call it."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    try:
        if accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        torch.save(rank_state, tmp / rank_state_name(accelerator.process_index))
        if accelerator.is_main_process:
            torch.save(shared_state, tmp / SHARED_STATE)
            (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **trainer_state}, indent=2))
    except OSError as err:  # disk full, quota, permissions: the completed checkpoints are untouched
        shutil.rmtree(tmp, ignore_errors=True)
        found = list_checkpoints(run_dir)
        raise CheckpointError(f"could not write the checkpoint of step {step} in {root}: {err}. The previous "
                              f"checkpoint ({found[-1][1] if found else 'none'}) is intact; free space and "
                              "rerun with --resume latest") from None
    # save_state does not wait for the other ranks: nobody may rename or read the folder before all wrote.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(tmp)
        old = root / f".step-{step:07d}.old"
        if final.exists():  # the same step saved again (e.g. after a resume): the new one replaces it
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` completed checkpoints, and leftovers of interrupted saves."""
    for _, folder in list_checkpoints(run_dir)[:-max(keep, 1)]:
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in [*checkpoints_dir(run_dir).glob(".step-*.tmp"), *checkpoints_dir(run_dir).glob(".step-*.old")]:
        shutil.rmtree(leftover, ignore_errors=True)


# What accelerate's pickles may reference: its RNG states hold numpy arrays. Anything else (os.system,
# builtins.eval, ...) in a checkpoint file means it was crafted, and nothing in it is unpickled.
ALLOWED_PICKLE_GLOBALS = {"numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
                          "numpy.dtype", "numpy.ndarray"}
ALLOWED_PICKLE_GLOBALS |= {f"numpy.dtypes.{name}DType" for name in ("UInt32", "Int64", "Float64", "UInt8", "Bool")}


def verify_checkpoint(folder: str | Path) -> None:
    """Check that every file of a checkpoint is complete and safe to load, without unpickling anything.

    Raises CheckpointError naming the first bad file.
    """
    from safetensors import safe_open

    folder = Path(folder)
    try:
        json.loads((folder / TRAINER_STATE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {folder}: {TRAINER_STATE} unreadable ({err})") from None
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    list(f.keys())
            elif path.suffix in (".bin", ".pkl", ".pt"):
                unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
                if unsafe - ALLOWED_PICKLE_GLOBALS:
                    raise CheckpointError(f"checkpoint file {path} references code it must not "
                                          f"({', '.join(sorted(unsafe - ALLOWED_PICKLE_GLOBALS))}); it was not "
                                          "loaded. Only resume from checkpoints you wrote yourself")
        except CheckpointError:
            raise
        except Exception as err:  # truncated zip, bad header, ...
            raise CheckpointError(f"checkpoint file {path} is damaged ({str(err).splitlines()[0]}); "
                                  "resume from an older checkpoint with --resume PATH") from None


def load_checkpoint(accelerator, folder: Path) -> tuple[dict, dict, dict | None]:
    """Restore accelerate's state from ``folder``; return (trainer_state, shared_state, this rank's state).

    Our own state files are loaded with ``weights_only=True``: tensors and plain containers only.
    The rank state is None when the checkpoint was written by fewer processes than are running now.
    """
    verify_checkpoint(folder)  # accelerate unpickles its RNG files: vet them first
    try:
        accelerator.load_state(str(folder))
        trainer_state = json.loads((folder / TRAINER_STATE).read_text())
        shared = torch.load(folder / SHARED_STATE, map_location="cpu", weights_only=True)
        rank_file = folder / rank_state_name(accelerator.process_index)
        rank = torch.load(rank_file, map_location="cpu", weights_only=True) if rank_file.is_file() else None
    except (OSError, RuntimeError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot load checkpoint {folder}: {str(err).splitlines()[0]}; resume from an "
                              "older one with --resume PATH") from None
    return trainer_state, shared, rank


def save_generators(path: str | Path, generators: dict[str, nn.Module], model_config: dict, step: int,
                    ema: bool, extra: dict | None = None) -> Path:
    """Write ``{"gen_ab": ..., "gen_ba": ...}`` weights and the model config to one safetensors file.

    ``extra``: more metadata, each value stored as JSON (e.g. the validation scores of ``best.safetensors``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
               for name, net in generators.items() for key, value in net.state_dict().items()}
    metadata = {"format": EXPORT_FORMAT, "version": "1", "model": json.dumps(model_config),
                "step": str(step), "ema": str(ema).lower(),
                **{key: json.dumps(value) for key, value in (extra or {}).items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_generators(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Weights per generator name and the metadata (``model`` decoded) of a generators file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"generators file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
    if metadata.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a cyclestyle generators file (no '{EXPORT_FORMAT}' metadata)")
    for key in set(metadata) - {"format", "version", "step", "ema"}:  # the model config and save_generators' extra
        try:
            metadata[key] = json.loads(metadata[key])
        except ValueError:
            raise CheckpointError(f"{path}: metadata '{key}' is not valid JSON; re-export the file") from None
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, param = key.partition(".")
        weights.setdefault(name, {})[param] = value
    return weights, metadata


# The names these had before "export" came to mean ONNX/TorchScript only (cyclestyle.export); kept so that
# existing scripts keep working.
export_generators = save_generators
read_export = read_generators
