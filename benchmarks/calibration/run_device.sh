#!/usr/bin/env bash
# Calibrate the shipped models on a GPU machine, one `simcli calibrate` per model, within one
# time budget: a model is started only while time is left, and is cut off at the budget's end.
# Profiles and the log go to $OUT (default out/calibration). The machine needs torch and
# cupy, not simpy: the CLI is started without the simulator's imports.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/calibration}
BUDGET_S=${BUDGET_S:-560}
MODELS=${MODELS:-opt-13b llama-2-7b llama-2-13b llama-3-8b}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1 | tee "$OUT/calibrate.log"
for model in $MODELS; do
    left=$((BUDGET_S - SECONDS))
    if ((left < 90)); then echo "skipped $model: ${left}s left of the budget" | tee -a "$OUT/calibrate.log"; continue; fi
    timeout "$left" python3 -c 'from kvsim.cli import main; main()' calibrate --model "$model" \
        --out "$OUT/$model.json" 2>&1 | tee -a "$OUT/calibrate.log"
    echo "$model: exit ${PIPESTATUS[0]} at ${SECONDS}s" | tee -a "$OUT/calibrate.log"
done
