#!/usr/bin/env bash
# Calibrate the shipped models on a GPU machine, one `simcli calibrate` per model, within one
# time budget: a model is started only while time is left, and is cut off at the budget's end.
# Profiles and the log go to $OUT (default out/calibration). The machine needs torch and
# cupy, not simpy: the CLI is started without the simulator's imports. A model written
# MODEL:N is one rank's shard of it split over N GPUs (`--tensor-parallel N`), measured on
# this one GPU and written as MODEL-tpN.json. EAGER=1 calibrates the eager runner (`--eager`:
# no CUDA graphs, the 2023 engine's unfused operations) and writes MODEL[-tpN]-eager.json.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/calibration}
BUDGET_S=${BUDGET_S:-560}
MODELS=${MODELS:-opt-13b llama-2-7b llama-2-13b llama-3-8b}
EAGER=${EAGER:-0}
eager_flag=() suffix=""
if [[ $EAGER == 1 ]]; then eager_flag=(--eager) suffix=-eager; fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1 | tee "$OUT/calibrate.log"
for entry in $MODELS; do
    model=${entry%%:*}
    tp=1 name=$model
    if [[ $entry == *:* ]]; then tp=${entry##*:} name=$model-tp$tp; fi
    left=$((BUDGET_S - SECONDS))
    if ((left < 90)); then echo "skipped $entry: ${left}s left of the budget" | tee -a "$OUT/calibrate.log"; continue; fi
    timeout "$left" python3 -c 'from kvsim.cli import main; main()' calibrate --model "$model" \
        --tensor-parallel "$tp" "${eager_flag[@]}" --out "$OUT/$name$suffix.json" 2>&1 | tee -a "$OUT/calibrate.log"
    echo "$entry: exit ${PIPESTATUS[0]} at ${SECONDS}s" | tee -a "$OUT/calibrate.log"
done
