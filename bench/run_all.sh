#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, one after another, then the tables of BENCHMARKS.md rewritten from the JSON.
#
# Command:   bash bench/run_all.sh [PYTHON]      (PYTHON defaults to .venv/bin/python, then python3)
# Time:      about 15 minutes on 2 idle cores (more when other work shares them: each figure records the load).
# Writes:    bench/results/NAME.json and NAME.log per figure, and the tables between the figure markers of
#            BENCHMARKS.md (bench/render.py). Run one benchmark alone with `python bench/NAME.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p bench/results
for name in throughput malloc online_teacher harvest ray_overhead scheduling; do
  echo "== $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  start=$(date +%s)
  "$PYTHON" "bench/$name.py" --out "bench/results/$name.json" 2>&1 | tee "bench/results/$name.log" \
    | grep -E '^\||^wrote|Error|error' || true
  echo "== $name took $(( $(date +%s) - start )) s"
done
# On a shared machine 2 threads per matmul collapse (BENCHMARKS.md): 1 thread against the 1-thread matmul rate
# is the steady figure; bf16 (AMX on this CPU) the same way.
echo "== throughput_1thread (load $(cut -d' ' -f1-3 /proc/loadavg))"
"$PYTHON" bench/throughput.py --threads 1 --out bench/results/throughput_1thread.json 2>&1 \
  | tee bench/results/throughput_1thread.log | grep -E '^wrote|Error' || true
echo "== throughput_bf16 (load $(cut -d' ' -f1-3 /proc/loadavg))"
"$PYTHON" bench/throughput.py --threads 1 --dtypes bf16 --batches 512 --hidden 4096 8192 16384 32768 --no-fused-comparison \
  --out bench/results/throughput_bf16.json 2>&1 | tee bench/results/throughput_bf16.log | grep -E '^wrote|Error' || true
echo "== linear_bottleneck (load $(cut -d' ' -f1-3 /proc/loadavg))"
"$PYTHON" bench/linear_bottleneck.py --threads 1 --out bench/results/linear_bottleneck.json 2>&1 \
  | tee bench/results/linear_bottleneck.log | grep -E '^wrote|Error' || true
"$PYTHON" bench/render.py BENCHMARKS.md
