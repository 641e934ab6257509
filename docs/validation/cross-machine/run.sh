#!/usr/bin/env bash
# The cross-machine campaign (issue 19), in one device-machine call: the shipped H200 profiles,
# measured on another machine, first checked here (`simcli calibrate --check`: anchor steps,
# the engine's work, clocks under load, the adjusted profile), then validated here with
# 1,000-request points below saturation on new seeds (simulated with the shipped profiles;
# `simcli validate --reprice` prices them with the adjusted ones afterwards, no GPU needed).
# Usage (repo root, on the GPU machine, simpy's wheel in .whl/):
#   OUT=/some/dir SEED=12 bash docs/validation/cross-machine/run.sh
set -o pipefail
OUT=${OUT:-out}
SEED=${SEED:-12}
dir="$OUT/cross-machine"
mkdir -p "$dir"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
nvidia-smi -q > "$dir/nvidia-smi.txt"
date -u > "$dir/date.txt"
for model in opt-13b llama-2-7b; do
  timeout 110 python3 -m kvsim.cli calibrate --check --model $model --out "$dir/$model.adjusted.json" 2>&1 \
    | tee "$dir/check-$model.log"
done
timeout 200 python3 -m kvsim.cli validate --model opt-13b --scheduler v0 --rate 8 --num-requests 1000 \
  --seed "$SEED" --out "$dir/opt-13b" 2>&1 | grep -v "━" | tee "$dir/validate-opt-13b.log"
timeout 150 python3 -m kvsim.cli validate --model llama-2-7b --scheduler v0 --rate 12 --num-requests 1000 \
  --seed "$SEED" --out "$dir/llama-2-7b" 2>&1 | grep -v "━" | tee "$dir/validate-llama-2-7b.log"
tar czf "$OUT/cross-machine.tgz" -C "$OUT" cross-machine && rm -rf "$dir"
