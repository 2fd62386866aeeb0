#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): (a) a bf16-mixed fine-tune of the sample catalogue whose loss falls with
# no NaN, (b) the fine-tune loop's images/s against its floor on the GPU, (c) head-only training + test on the GPU
# matching the CPU's metrics. Prints a summary naming the card; exits non-zero on any failure, 2 without a GPU.
#
#   bash benchmarks/gpu_check.sh                    # on a machine with one CUDA GPU (under 8 minutes)
#   bash benchmarks/gpu_check.sh --json out.json    # also write every number
#   bash benchmarks/gpu_check.sh --cpu-dry-run      # the same checks, tiny, on the CPU (tests the script)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CLIPITA_QUIET=1
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# a hard limit of 8 minutes: a check that hangs fails the script (exit 124) instead of holding the device
exec timeout --kill-after=20 480 python -m benchmarks.gpu_check "$@"
