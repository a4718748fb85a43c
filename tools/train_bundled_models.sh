#!/usr/bin/env bash
# Train the bundled models (models/lua-<family>-small.safetensors) on CPU, one after another.
#   bash tools/train_bundled_models.sh [RUNS_DIR] [FAMILY ...]      (default: runs/ sdxl sd1 flux1 sd3)
# SDXL trains from scratch with the full cpu preset; FLUX.1 from scratch with a shorter stage I (latent-only
# steps help decoded quality least); SD1 and SD3 start from the model of the family with the same channel
# count and get a short fine-tune (the paper's "same backbone, short fine-tune"). These are the schedules the
# shipped files were trained with (their metadata records the steps).
# Each run keeps state.pt in RUNS_DIR/<family>: rerunning the script continues an interrupted run exactly.
# Then sdxl and sd1 are continued (stage III only) on 320 px tiles with random aligned crops, synthetic flat and
# gradient tiles and the calibrated loss weights (the second generation, see models/README.md); the run stops
# after --max-minutes of wall time, so on a busy machine it does fewer steps (its metadata records how many).
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
for fam in sdxl sd1; do
  case " $FAMILIES " in *" $fam "*) ;; *) continue ;; esac
  run="$RUNS/$fam-v2"
  resume=()
  [ -f "$run/state.pt" ] && resume=(--resume)
  python -m lua_core train --preset cpu --data "$SHARED/data/train" --family "$fam" \
      --vae-approx "$SHARED/vae_approx" --run-dir "$run" --cache-dir "$RUNS/cache-$fam-v2" \
      --init-from "models/lua-$fam-small.safetensors" --tile 320 --max-tiles-per-image 1 --stage-steps 0,0,4000 \
      --lr 3e-4 --fit-minutes 60 --max-minutes 65 --export "$run/lua-$fam-small.safetensors" \
      --note "continued: random tile crops, synthetic flats, calibrated loss weights" "${resume[@]}"
  # stopped by --max-minutes before the last step: export the EMA weights of the saved state
  [ -f "$run/lua-$fam-small.safetensors" ] || python -m lua_core train --run-dir "$run" --resume --export-only
  # replace the bundled file only if bench/quality.py says the new one is better (see DEVELOPERS.md)
done
