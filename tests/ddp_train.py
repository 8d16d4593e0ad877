"""Run under ``accelerate launch`` by the tests: train, then write each rank's view of the result.

    ddp_train.py OUT key=value ...

``<train.run_dir>/straight`` trains all steps; ``<train.run_dir>/split`` stops at half and is resumed (the
test compares the two final checkpoints). Then, in the same processes, ``<train.run_dir>/nan`` trains with the
generators' L1 loss NaN on rank 1 only, and each rank records the error it stopped with.
"""

import json
import os
import sys
from pathlib import Path

import torch

from cyclestyle import losses
from cyclestyle.config import load_config
from cyclestyle.training import train

out, overrides = Path(sys.argv[1]), sys.argv[2:]
out.mkdir(parents=True, exist_ok=True)
rank = int(os.environ["RANK"])
base = Path(load_config(None, overrides).train.run_dir)
straight = train(load_config(None, [*overrides, f"train.run_dir={base / 'straight'}"]))
split = load_config(None, [*overrides, f"train.run_dir={base / 'split'}"])
train(split, stop_at_step=split.train.steps // 2)
result = train(split, resume="latest")
nets = {**result.generators, **result.discriminators}
shared = torch.load(result.checkpoint / "shared_state.pt", weights_only=True)
summary = {
    "num_processes": result.num_processes,
    "step": result.step,
    "checkpoints": [str(straight.checkpoint), str(result.checkpoint)],
    "params": {f"{n}.{k}": float(v.double().sum()) for n, m in nets.items() for k, v in m.state_dict().items()},
    "targets": float(shared["style_target_ab"]["gram_0"].double().sum()) if "style_target_ab" in shared else None,
    "pool": float(torch.load(result.checkpoint / f"rank_state_{rank}.pt", weights_only=True)
                  ["pool_a"]["images"].double().sum()),
}

if rank == 1:
    losses.l1 = lambda a, b: (a - b).abs().mean() * float("nan")  # fault injection on one process
try:
    train(load_config(None, [*overrides, f"train.run_dir={base / 'nan'}", "train.log_every=2",
                             "validation.every=0"]))
    summary["nan_error"] = None
except FloatingPointError as err:
    summary["nan_error"] = str(err)
(out / f"rank{rank}.json").write_text(json.dumps(summary))
