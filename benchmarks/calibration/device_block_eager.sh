#!/usr/bin/env bash
# On an H200: (1) the decode kernel's block-size table added to the shipped H200 profiles
# (`simcli calibrate --block-sizes-only`: the kernel alone, seconds per model), written as
# $OUT/MODEL@h200-141gb.json, models in order while BLOCK_BUDGET_S lasts; (2) OPT-13B calibrated
# with CUDA graphs off (`simcli calibrate --eager`), written as $OUT/opt-13b-eager@h200-141gb.json.
# Each step runs under `timeout` (EAGER=0 skips the second); the log is
# $OUT/device_block_eager.log. The GPU machine has no simpy (the calibration path does not need
# it; the wheel is installed if it was carried).
# Afterwards, without a GPU: copy the profiles into kvsim/cost/profiles and derive the A100 ones
# (docs/calibration.md, Cross-GPU transfer):
#   python -m kvsim.calibration.transfer kvsim/cost/profiles/M@h100-sxm-80gb.json a100-40gb \
#       --block-sizes-from kvsim/cost/profiles/M@h200-141gb.json --out kvsim/cost/profiles/M@a100-40gb.json
#   python -m kvsim.calibration.transfer kvsim/cost/profiles/opt-13b-eager@h200-141gb.json a100-40gb \
#       --out kvsim/cost/profiles/opt-13b-eager@a100-40gb.json
pip install -q .whl/simpy-*.whl 2>/dev/null || true
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-out/device_block_eager}
BLOCK_BUDGET_S=${BLOCK_BUDGET_S:-90}
EAGER=${EAGER:-1}
EAGER_TIMEOUT_S=${EAGER_TIMEOUT_S:-420}
MODELS=${MODELS:-opt-13b llama-2-7b llama-2-13b llama-3-8b}
LOG="$OUT/device_block_eager.log"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1 | tee "$LOG"
SIMCLI=(python3 -c 'from kvsim.cli import main; main()')  # simcli, without an installed entry point

# (1) One process per model: a model is started only while the budget lasts, and cut off at its end.
for model in $MODELS; do
    left=$((BLOCK_BUDGET_S - SECONDS))
    if ((left < 10)); then echo "skipped $model: ${left}s left of the block-size budget" | tee -a "$LOG"; continue; fi
    timeout "$left" "${SIMCLI[@]}" calibrate --block-sizes-only --model "$model" \
        --profile "kvsim/cost/profiles/$model@h200-141gb.json" --out "$OUT/$model@h200-141gb.json" 2>&1 | tee -a "$LOG"
    echo "block sizes $model: exit ${PIPESTATUS[0]} at ${SECONDS}s" | tee -a "$LOG"
done

# (2) The eager runner's profile of OPT-13B (its block-size table is measured as part of it).
if [[ $EAGER != 1 ]]; then echo "eager calibration skipped (EAGER=$EAGER)" | tee -a "$LOG"; exit 0; fi
start=$SECONDS
timeout "$EAGER_TIMEOUT_S" "${SIMCLI[@]}" calibrate --model opt-13b --eager \
    --out "$OUT/opt-13b-eager@h200-141gb.json" 2>&1 | tee -a "$LOG"
echo "eager opt-13b: exit ${PIPESTATUS[0]} after $((SECONDS - start))s, ${SECONDS}s in all" | tee -a "$LOG"
