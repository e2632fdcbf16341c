#!/usr/bin/env bash
# The GPU check: one script, at most ~10 minutes on a freshly started NVIDIA machine, each stage
# under its own timeout and each writing bench/results/gpu_<stage>.json (naming the card) as it
# goes, so a stage that fails or runs out of time leaves what it measured and the next runs.
#
#   bash bench/gpu_check.sh            (from the repository root; PYTHON=... to pick the Python)
#   bash bench/gpu_check.sh --allow-cpu   (a dry run without a GPU: checks the script only)
#
# Stages, Serve first (the project's application has never run on a GPU):
#   serve          the cuda back-end on Ray Serve under HTTP load, beside a no-op app (needs Ray)
#   ray_train      v2 training steps through Ray Train against the bare loop, same process (needs Ray)
#   packed_trials  four smoke trials at 0.25 GPU each (needs Ray)
#   train_steps    plain-Lightning fits: 16 x 4 against the single step of 64, step capture
#   inference      eager batched inference
# Ray is not on the GPU machine: bring its wheel and the pure-Python wheels it needs first.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
PY=${PYTHON:-python3}
EXTRA=("$@")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

failed=()
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=15 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

if "$PY" -c "import ray" 2>/dev/null; then
  stage serve 150 "$PY" bench/gpu_ray.py serve "${EXTRA[@]}"
  stage ray_train 120 "$PY" bench/gpu_ray.py ray_train --epochs 3 "${EXTRA[@]}"
  stage packed_trials 120 "$PY" bench/gpu_ray.py packed_trials "${EXTRA[@]}"
else
  echo "Ray is not installed here: the serve, ray_train and packed_trials stages cannot run"
  failed+=("serve, ray_train, packed_trials (no Ray)")
fi
stage train_steps 150 "$PY" bench/gpu_check.py train_steps --epochs 3 "${EXTRA[@]}"
stage inference 40 "$PY" bench/gpu_check.py inference "${EXTRA[@]}"
ls -l bench/results/gpu_*.json 2>/dev/null
if [ ${#failed[@]} -gt 0 ]; then
  printf 'stages that did not finish: %s\n' "${failed[@]}"
  exit 1
fi
echo "all stages finished"
