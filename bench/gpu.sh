#!/usr/bin/env bash
# Paper-scale student throughput on one CUDA GPU (not runnable on the 2-core CPU machines).
#
# Command:   bash bench/gpu.sh [PYTHON]          (PYTHON defaults to .venv/bin/python, then python3)
# Measures:  bench/throughput.py --device cuda --paper: TIMIT-shaped SNN students (D=1845, C=183), H = 8k, 50k,
#            160k, 400k, with a k=250 bottleneck and without (the plain 400k student has 811M parameters, about
#            16 GB with gradients, AdamW state and fit's best-state copy: fits one 40 GB+ GPU), batch 256 and
#            1024, in each TrainConfig.precision: fp32, tf32 (fp32 matmuls on tensor cores) and bf16 (autocast,
#            fp32 weights); samples/s, FLOP/s and the fraction of the same-run matmul rate of that precision.
# Time:      about 4-6 minutes on one H100/H200-class GPU (48 timed students of ~4 s each, plus start-up);
#            sized for < 8 minutes. `timeout` below stops it at 8.
# Target:    issue 19's: fp32 and tf32 >= 0.8 of the matmul rate of that precision for H >= 4k, bf16 >= 0.6.
# Not run yet: no GPU has been lent to this work (BENCHMARKS.md, figure 1).
# Check:     bash bench/gpu.sh --tiny   runs the same script on the CPU at toy sizes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ "${1:-}" = "--tiny" ]; then
  exec "$PYTHON" bench/throughput.py --tiny --dtypes fp32 bf16 --no-fused-comparison --out "${OUT:-/tmp}/gpu_tiny.json"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
timeout 480 "$PYTHON" bench/throughput.py --device cuda --paper --batches 256 1024 --dtypes fp32 tf32 bf16 \
  --seconds 1.0 --out "${OUT:-bench/results}/gpu_throughput.json"
