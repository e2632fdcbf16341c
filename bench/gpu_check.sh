#!/usr/bin/env bash
# One GPU check, at most ~4 minutes: v2 epochs with plain Lightning (fp32 and bf16) and
# batched inference on one NVIDIA GPU; then, only where Ray is installed beside the GPU,
# four smoke-search trials packed on the card at 0.25 GPU each.
#   bash bench/gpu_check.sh [EPOCHS]      (run from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 200 "$PY" bench/gpu_check.py "${1:-3}"
if "$PY" -c "import ray" 2>/dev/null; then
  timeout 180 "$PY" ray_jobs/tune.py --space search_spaces/smoke.yaml --num-samples 4 --max-concurrent 4 \
    --gpus-per-trial 0.25 --no-evaluate --storage-path "$PWD/runs/gpu_check"
else
  echo "Ray is not installed here: fractional-GPU trial packing not exercised"
fi
