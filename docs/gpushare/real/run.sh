#!/usr/bin/env bash
# Issue 17 against the real GPU, in one device-machine call: the GPU tests of the real executor,
# `simcli gpushare profile` of Paella's eight models (the kernel chains and each model's pass as
# one CUDA graph, into $OUT/gpushare-real/profiles: the profiles the measurement is simulated
# with), then `simcli gpushare measure` on the two extreme models (ResNet-18 0.952, Inception-v3 0.048)
# over a load sweep, for the hardware baselines (a stream per job, one stream for all) and the
# real SRPT dispatcher, JOBS jobs per point. Each step is cut off at what is left of BUDGET_S;
# a measurement cut short keeps the points it finished. `simcli gpushare compare-real` then runs
# anywhere (no GPU) on what comes back.
# Usage (repo root, on the GPU machine, simpy's wheel in .whl/):
#   OUT=/some/dir bash docs/gpushare/real/run.sh
set -o pipefail
OUT=${OUT:-out}
BUDGET_S=${BUDGET_S:-540}
JOBS=${JOBS:-3000}
LOADS=${LOADS:-0.25,0.5,0.75,1,1.25,1.5,2}
POLICIES=${POLICIES:-cuda-multi-stream,cuda-single-stream,paella-srpt}
dir="$OUT/gpushare-real"
mkdir -p "$dir"
python3 -m pip install -q --no-deps .whl/simpy-4.1.2-py3-none-any.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
stamp() { echo "[${SECONDS}s of ${BUDGET_S}s] $*" | tee -a "$dir/timings.txt"; }
left() { echo $((BUDGET_S - SECONDS - 15)); }  # 15 s kept for packing up
nvidia-smi -q > "$dir/nvidia-smi.txt"
date -u > "$dir/date.txt"
stamp "start"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpushare 2>&1 | tail -n 30 | tee "$dir/gpu-tests.log"
stamp "gpu tests: exit ${PIPESTATUS[0]}"
timeout "$(left)" python3 -m kvsim.cli gpushare profile --out "$dir/profiles" 2>&1 | tee "$dir/profile.log"
stamp "profile: exit ${PIPESTATUS[0]}"
timeout "$(left)" python3 -m kvsim.cli gpushare measure --mix extremes --policies "$POLICIES" --load "$LOADS" \
  --num-jobs "$JOBS" --profiles "$dir/profiles" --out "$dir/extremes" 2>&1 | tee "$dir/measure-extremes.log"
stamp "measure extremes: exit ${PIPESTATUS[0]}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv \
  > "$dir/nvidia-smi-after.csv"
tar czf "$OUT/gpushare-real.tgz" -C "$OUT" gpushare-real && rm -rf "$dir"
echo "[${SECONDS}s of ${BUDGET_S}s] packed $OUT/gpushare-real.tgz"
