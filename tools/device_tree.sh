#!/usr/bin/env bash
# Fit the working tree into the device tool's 64 MiB for the GPU training sprint, and put it back afterwards.
#
#   bash tools/device_tree.sh park      # move what the sprint does not need out of the tree, print the size
#   run(command="... bench/gpu_kit.py $OUT ... --train sdxl,flux1,sd3,sd1,flux2 ...", carry=[".gpu_data"])
#   bash tools/device_tree.sh restore   # always, also when the call failed
#
# The tracked tree is ~62 MB (five bundled models: 48 MB) and the sprint's images (.gpu_data, from
# tools/prepare_gpu_data.py with its defaults) ~16 MB. The sprint
# takes each prior from models/ (train-v2 --prior-from), so the test model, the report images and the demo's
# taesdxl copy can stay behind (12.5 MB). `git status` shows them deleted while parked.
set -euo pipefail
cd "$(dirname "$0")/.."
PARK=${PARK_DIR:-/tmp/lua-parked}
FILES=(tests/data/lua-sdxl-small-v1.safetensors lua_core/assets/sample.png lua_core/assets/taesdxl_decoder.safetensors
       lua_core/assets/taesdxl_encoder.safetensors docs/quality-crops-*.png docs/quality-psnr.png)
size() {  # what travels: tracked and untracked-not-ignored files that exist, plus .gpu_data
  local tree gpu
  tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | { xargs -0 stat -c %s 2>/dev/null || true; } \
         | awk '{s+=$1} END {print s+0}')  # parked files are listed but missing: stat skips them
  gpu=$(du -sb .gpu_data 2>/dev/null | cut -f1); gpu=${gpu:-0}
  echo "travels: tree $((tree / 1048576)) MiB + .gpu_data $((gpu / 1048576)) MiB = $(((tree + gpu) / 1048576)) MiB (limit 64)"
  [ $((tree + gpu)) -le $((64 * 1048576)) ] || { echo "over the limit" >&2; return 1; }
}
case ${1:-} in
  park)
    for f in "${FILES[@]}"; do mkdir -p "$PARK/$(dirname "$f")"; mv "$f" "$PARK/$f"; done
    size ;;
  restore)
    [ -d "$PARK" ] || { echo "nothing parked in $PARK"; exit 0; }
    (cd "$PARK" && find . -type f -print0) | while IFS= read -r -d '' f; do mv "$PARK/$f" "$f"; done
    rm -rf "$PARK"; git status --short | grep '^ D' && { echo "still missing" >&2; exit 1; } || echo "restored" ;;
  *) echo "usage: $0 park|restore" >&2; exit 2 ;;
esac
