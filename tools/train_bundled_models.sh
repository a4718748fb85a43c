#!/usr/bin/env bash
# Train the bundled models (models/lua-<family>-small.safetensors) on CPU, one after another.
#   bash tools/train_bundled_models.sh [RUNS_DIR] [FAMILY ...]      (default: runs/ sdxl sd1 flux1 sd3)
# SDXL trains from scratch with the full cpu preset; FLUX.1 from scratch with a shorter stage I (latent-only
# steps help decoded quality least); SD1 and SD3 start from the model of the family with the same channel
# count and get a short fine-tune (the paper's "same backbone, short fine-tune"). These are the schedules the
# shipped files were trained with (their metadata records the steps).
# Each run keeps state.pt in RUNS_DIR/<family>: rerunning the script continues an interrupted run exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}; shift || true
FAMILIES=${*:-sdxl sd1 flux1 sd3}  # order matters: sd1 starts from sdxl, sd3 from flux1
SHARED=${SHARED:-../shared}
for fam in $FAMILIES; do
  extra=()
  case $fam in
    flux1) extra=(--stage-steps 500,200,2000) ;;
    sd1) extra=(--init-from models/lua-sdxl-small.safetensors --stage-steps 0,200,1400) ;;
    sd3) extra=(--init-from models/lua-flux1-small.safetensors --stage-steps 0,200,1400) ;;
  esac
  resume=()
  [ -f "$RUNS/$fam/state.pt" ] && resume=(--resume)
  python -m lua_core train --preset cpu --data "$SHARED/data/train" --family "$fam" \
      --vae-approx "$SHARED/vae_approx" --run-dir "$RUNS/$fam" --cache-dir "$RUNS/cache_$fam" \
      --export "models/lua-$fam-small.safetensors" --note "bundled model, cpu preset" "${extra[@]}" "${resume[@]}"
done
