#!/usr/bin/env bash
# GPU check (a script, not a test): on one GPU, in under 8 minutes, prove the GPU paths work and measure
# them. Run it from the repository root after installing cyclestyle:
#
#     tools/gpu_check.sh [OUT_DIR]                 # default OUT_DIR: runs/gpu-check
#
# 1. a few real training steps on the bundled data in fp16 (accelerate's grad scaler) and bf16; the losses
#    must be finite and a checkpoint and export must appear;
# 2. tools/benchmark.py at 256 px, batch 1 and batch 8: fp32, fp16, bf16, bf16+compile, ratios vs fp32;
# 3. tools/benchmark_translate.py: 256 px batches and a 4096x3072 tiled image, fp32/fp16/bf16.
# Everything printed is also kept in OUT_DIR (gpu_check.log and the JSON tables).
# DEVICE=cpu SIZE=64 BATCHES="1 2" STEPS=3 LARGE="512 384" PYTHON=.venv/bin/python tools/gpu_check.sh /tmp/x
# runs the same plumbing on a CPU in a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-256}
BATCHES=${BATCHES:-1 8}
STEPS=${STEPS:-10}
LARGE=${LARGE:-4096 3072}
# fp16 translation needs a GPU (the CPU has no fp16 units; Translator refuses it there)
TRANSLATE_PRECISIONS=$([ "$DEVICE" = cpu ] && echo "fp32 bf16" || echo "fp32 fp16 bf16")
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible to torch (DEVICE=cpu runs the plumbing on a CPU)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" -c "import torch, cyclestyle; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cyclestyle', cyclestyle.__version__)"

echo "== 1. training steps on data/sample: fp16 (grad scaling) and bf16"
for precision in fp16 bf16; do
  rm -rf "$OUT/train-$precision"
  "$PY" -m cyclestyle train --config configs/quickstart.yaml train.run_dir="$OUT/train-$precision" \
      train.steps=40 train.decay_steps=20 train.log_every=10 train.checkpoint_every=40 \
      train.mixed_precision="$precision" 2>&1 | grep -v "it/s\]" | tail -n 4
  "$PY" - "$OUT/train-$precision" <<'PYEOF'
import math, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run = Path(sys.argv[1])
acc = EventAccumulator(str(run / "tb")); acc.Reload()
last = {t: acc.Scalars(t)[-1].value for t in acc.Tags()["scalars"] if t.startswith("loss/")}
assert last and all(math.isfinite(v) for v in last.values()), last
assert (run / "generators" / "last.safetensors").is_file()
print(f"{run.name}: finite losses at step {acc.Scalars('loss/gen_total')[-1].step}: "
      + ", ".join(f"{k[5:]} {v:.3f}" for k, v in sorted(last.items())))
PYEOF
done

echo "== 2. training benchmark, ${SIZE} px"
for batch in $BATCHES; do
  "$PY" tools/benchmark.py --size "$SIZE" --batch "$batch" --warmup 3 --steps "$STEPS" --device "$DEVICE" \
      --workers 4 --modes fp32 fp16 bf16 bf16+compile --no-translate --json "$OUT/train_b$batch.json"
done

echo "== 3. translation benchmark"
"$PY" tools/benchmark_translate.py --device "$DEVICE" --size "$SIZE" --batch 8 --n 64 --large $LARGE \
    --precisions $TRANSLATE_PRECISIONS --json "$OUT/translate.json"
echo "gpu_check: done; log and tables in $OUT"
