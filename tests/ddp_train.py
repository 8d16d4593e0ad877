"""Run under ``accelerate launch`` by test_training.py: train, then write each rank's view of the result."""

import json
import sys
from pathlib import Path

import torch

from cyclestyle.config import load_config
from cyclestyle.training import train

out = Path(sys.argv[1])
result = train(load_config(None, sys.argv[2:]))
rank = torch.distributed.get_rank()
nets = {**result.generators, **result.discriminators}
summary = {
    "num_processes": result.num_processes,
    "step": result.step,
    "params": {f"{n}.{k}": float(v.double().sum()) for n, m in nets.items() for k, v in m.state_dict().items()},
    "targets": float(torch.load(result.checkpoint / "shared_state.pt", weights_only=True)
                     ["style_target_ab"]["gram_0"].double().sum()),
    "pool": float(torch.load(result.checkpoint / f"rank_state_{rank}.pt", weights_only=True)
                  ["pool_a"]["images"].double().sum()),
}
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps(summary))
