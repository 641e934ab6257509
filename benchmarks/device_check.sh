#!/usr/bin/env bash
# One device-machine call: GPU tests, then the kernel, runner and prefill benchmarks.
# Usage (repo root, on the GPU machine): OUT=/some/dir bash benchmarks/device_check.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/env.txt"
timeout 270 python3 -m pytest -q -p no:cacheprovider -rA tests/gpu --maxfail=5 2>&1 \
  | grep -v "^PASSED\|^$" | tee "$OUT/pytest.log" | tail -40
timeout 290 python3 benchmarks/bench_kernels.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
timeout 150 python3 benchmarks/bench_prefill.py opt-13b llama-2-7b --json "$OUT/prefill.json" 2>&1 \
  | tee "$OUT/bench_prefill.log"
