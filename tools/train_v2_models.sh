#!/usr/bin/env bash
# Train the bundled v2 models (re-encode prior + residual) on CPU, one family after another; resumable.
#   bash tools/train_v2_models.sh [RUNS_DIR] [FAMILY ...]        (default: runs/ sdxl sd1 sd3 flux1 flux2)
# 1. bench/input_variants.py trains both residual input variants on SDXL for the same steps and scores them
#    on held-out images (bench/results/input-variants-sdxl.json); the winner's run continues to the full schedule.
# 2. Every other family trains the winning variant from scratch (zero residual = the pixel route) for STEPS.
# Each run keeps state.pt in RUNS_DIR/v2-<family>...: rerunning the script continues an interrupted run.
# Exports go to RUNS_DIR/v2-<family>.safetensors; bench/quality.py decides whether one replaces models/.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}; shift || true
FAMILIES=${*:-sdxl sd1 sd3 flux1 flux2}
SHARED=${SHARED:-../shared}
STEPS=${STEPS:-1200}
PY=${PY:-python}
DATA=("$SHARED/data/train" "$SHARED/data/photos")
[ -f bench/results/input-variants-sdxl.json ] || $PY bench/input_variants.py --family sdxl --steps "$STEPS" --compare-steps 200 --runs "$RUNS"
WINNER=$($PY -c "import json; print(json.load(open('bench/results/input-variants-sdxl.json'))['winner'])")
for fam in $FAMILIES; do
  run="$RUNS/v2-$fam"
  [ "$fam" = sdxl ] && run="$RUNS/v2-sdxl-${WINNER//+/-}"
  resume=()
  [ -f "$run/state.pt" ] && resume=(--resume)
  $PY -m lua_core train-v2 --family "$fam" --data "${DATA[@]}" --vae-approx "$SHARED/vae_approx" \
      --run-dir "$run" --cache-dir "$RUNS/cache-v2-$fam" --inputs "$WINNER" --steps "$STEPS" --minutes 0 \
      --export "$RUNS/v2-$fam.safetensors" --note "bundled v2 model, cpu" "${resume[@]}"
done
