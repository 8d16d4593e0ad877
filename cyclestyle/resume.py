"""The resume policy: which config keys a resumed run may change, and the run folder's record of changes.

A checkpoint stores the config it was trained with. On resume the new config is compared with it, key by
key. Keys that set the shape or the meaning of saved state (the networks, the crop, the data stream's
position, the image pools, the EMA, the style targets) are frozen: changing one is refused, with every
offending key on its own line. Every other key may change and takes effect from the resumed step (the
optimizers' learning rate and betas are rewritten, the schedule is recomputed); the changes are printed and
appended, with their step, to ``run_dir/config_changes.log``, and ``config.yaml`` becomes the config in
force now. The README's "Resume policy" table lists the same keys.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from cyclestyle import checkpoint, config as config_lib
from cyclestyle.config import Config, ConfigError

CHANGES_LOG = "config_changes.log"

# key or section -> what it would break. A section ("model") freezes every key under it.
FROZEN = {
    "model": "the saved networks' shapes",
    "data.load_size": "the image pools' contents and the crops already seen",
    "data.crop_size": "the saved image pools' shapes",
    "data.resize": "the image pools' contents and the crops already seen",
    "train.batch_size": "the data stream's position (step x batch x accumulation)",
    "train.grad_accum": "the data stream's position (step x batch x accumulation)",
    "train.seed": "the data stream and the image pools' random streams",
    "train.pool_size": "the saved image pools",
    "train.ema": "the saved EMA generators",
    "loss.style_target": "the saved style targets",
    "loss.style_reference": "the saved reference Gram (A->B style target)",
}
# Changing any of these makes the saved best validation score incomparable: it is reset, not restored.
VALIDATION_SUBSET = ("validation.root_a", "validation.root_b", "validation.num_images", "validation.direction",
                     "validation.metric", "validation.inception_weights")
NOT_COMPARED = ("train.run_dir",)  # the same folder, however it is spelled


def saved_config(run_dir: Path, folder: Path) -> tuple[int, dict | None]:
    """(step, config dict) of a checkpoint: its own copy of the config, else the run's ``config.yaml``
    (checkpoints written before the config was stored in them); None when neither exists."""
    try:
        state = json.loads((folder / checkpoint.TRAINER_STATE).read_text())
    except (OSError, ValueError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {folder}: {checkpoint.TRAINER_STATE} unreadable ({err}); "
                                         "resume from an older one with --resume PATH") from None
    if "config" in state:
        return state["step"], state["config"]
    path = run_dir / "config.yaml"
    return state["step"], config_lib.to_dict(config_lib.load_config(path)) if path.is_file() else None


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _frozen_reason(key: str, old: dict, new: dict) -> str | None:
    for frozen, why in FROZEN.items():
        if key == frozen or key.startswith(frozen + "."):
            return why
    if key in ("loss.style_ab", "loss.style_ba") and (old[key] > 0) != (new[key] > 0):
        return "whether style targets are saved (the style loss on or off)"
    if key == "loss.vgg_weights" and any(d[k] > 0 for d in (old, new) for k in ("loss.style_ab", "loss.style_ba")):
        return "the feature space of the saved style targets"
    return None


def compare(saved: dict, cfg: Config) -> tuple[list[str], list[str]]:
    """(refused, applied): one ``key: old -> new`` line per changed key, refused ones with the reason."""
    old, new = _flatten(saved), _flatten(config_lib.to_dict(cfg))
    old.update({f"model.{key}": value for key, value in config_lib.LEGACY_MODEL.items() if f"model.{key}" not in old})
    refused, applied = [], []
    for key in sorted(set(old) | set(new)):
        if key in NOT_COMPARED or key not in old or key not in new or old[key] == new[key]:
            continue  # keys added to the schema since the checkpoint take their defaults
        line = f"{key}: {old[key]!r} -> {new[key]!r}"
        why = _frozen_reason(key, old, new)
        (refused if why else applied).append(f"{line} (it sets {why})" if why else line)
    return refused, applied


def check(run_dir: Path, cfg: Config, resume_from: Path | None) -> tuple[int, list[str]]:
    """Refuse a fresh start over a run, or a resume that changes frozen keys (ConfigError naming each one).
    Returns (step of the checkpoint, changed keys that will be applied); (0, []) for a fresh start."""
    found = checkpoint.list_checkpoints(run_dir)
    if resume_from is None:
        if found:
            raise ConfigError(f"{run_dir} already holds checkpoints of a run (latest: step {found[-1][0]}); "
                              "pass --resume latest to continue it, or choose another train.run_dir")
        return 0, []
    step, saved = saved_config(run_dir, resume_from)
    if saved is None:
        return step, []
    refused, applied = compare(saved, cfg)
    if refused:
        raise ConfigError(f"cannot resume {resume_from}: the config changes keys that a resume cannot change:\n  "
                          + "\n  ".join(refused) + f"\nkeep the checkpoint's values (in {run_dir / 'config.yaml'}) "
                          "or start a new run in another train.run_dir")
    return step, applied


def record(run_dir: Path, step: int, applied: list[str]) -> None:
    """Append a resume's changes, with its step and time, to the run folder's log (main process only)."""
    if not applied:
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(run_dir / CHANGES_LOG, "a") as log:
        log.write(f"{stamp} resumed at step {step}:\n" + "".join(f"  {line}\n" for line in applied))


def resets_validation_best(applied: list[str]) -> bool:
    return any(line.split(":", 1)[0] in VALIDATION_SUBSET for line in applied)
