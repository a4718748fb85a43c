#!/usr/bin/env bash
# Train the bundled models (models/lua-<family>-small.safetensors) on CPU, one after another.
#   bash tools/train_bundled_models.sh [RUNS_DIR] [FAMILY ...]      (default: runs/ sdxl sd1 flux1 sd3)
# SDXL and FLUX.1 train from scratch with the cpu preset; SD1 and SD3 start from the model of the family
# with the same channel count and get a shorter schedule (the paper's "same backbone, short fine-tune").
# Each run keeps state.pt in RUNS_DIR/<family>: rerunning the script continues an interrupted run exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}; shift || true
FAMILIES=${*:-sdxl sd1 flux1 sd3}
SHARED=${SHARED:-../shared}
for fam in $FAMILIES; do
  extra=()
  case $fam in
    sd1) extra=(--init-from models/lua-sdxl-small.safetensors --stage-steps 0,200,1600) ;;
    sd3) extra=(--init-from models/lua-flux1-small.safetensors --stage-steps 0,200,1600) ;;
  esac
  resume=()
  [ -f "$RUNS/$fam/state.pt" ] && resume=(--resume)
  python -m lua_core train --preset cpu --data "$SHARED/data/train" --family "$fam" \
      --vae-approx "$SHARED/vae_approx" --run-dir "$RUNS/$fam" --cache-dir "$RUNS/cache_$fam" \
      --export "models/lua-$fam-small.safetensors" --note "bundled model, cpu preset" "${extra[@]}" "${resume[@]}"
done
