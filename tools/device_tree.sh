#!/usr/bin/env bash
# Fit the working tree into the device tool's 64 MiB for the GPU training sprint, and put it back afterwards.
#
#   bash tools/device_tree.sh park sdxl flux1   # move what the sprint does not need out of the tree, print the size
#   run(command="... bench/gpu_kit.py $OUT ... --train sdxl,flux1 ...", carry=[".gpu_data"])
#   bash tools/device_tree.sh restore           # always, also when the call failed
#
# The sprint takes each prior from models/ (train-v2 --prior-from, train-upscaler --model), so the test model, the
# report images and the demo's taesdxl copy can stay behind (12.5 MB), and so can the bundled files of the families
# the call does not train (the FAMILY arguments: the families of --train and --train-upscalers; the kit's
# benchmarks build their own networks). All five files are 61 MiB now (46 MiB before the GPU files of 2026-12-04),
# so the tree alone is 62 MiB with them and leaves no room for the sprint's images (.gpu_data, ~16 MB from
# tools/prepare_gpu_data.py with its defaults): a five-family call no longer fits. `git status` shows the parked
# files deleted while parked.
set -euo pipefail
cd "$(dirname "$0")/.."
PARK=${PARK_DIR:-/tmp/lua-parked}
FILES=(tests/data/lua-sdxl-small-v1.safetensors lua_core/assets/sample.png lua_core/assets/taesdxl_decoder.safetensors
       lua_core/assets/taesdxl_encoder.safetensors docs/quality-crops-*.png docs/quality-psnr.png)
size() {  # what travels: tracked and untracked-not-ignored files that exist, plus .gpu_data
  local tree gpu
  tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | { xargs -0 stat -c %s 2>/dev/null || true; } \
         | awk '{s+=$1} END {print s+0}')  # parked files are listed but missing: stat skips them
  gpu=$(du -sb .gpu_data 2>/dev/null | cut -f1 || true); gpu=${gpu:-0}  # none prepared yet: 0
  echo "travels: tree $((tree / 1048576)) MiB + .gpu_data $((gpu / 1048576)) MiB = $(((tree + gpu) / 1048576)) MiB (limit 64)"
  [ $((tree + gpu)) -le $((64 * 1048576)) ] || { echo "over the limit" >&2; return 1; }
}
case ${1:-} in
  park)
    shift
    [ $# -gt 0 ] || { echo "name the families the call trains: park sdxl flux1 (their bundled files stay)" >&2; exit 2; }
    for fam in "$@"; do  # a typo would park the file the call needs
      [ -f "models/lua-$fam-small.safetensors" ] || { echo "no bundled file models/lua-$fam-small.safetensors" >&2; exit 2; }
    done
    for f in models/lua-*-small.safetensors; do
      fam=${f#models/lua-}; fam=${fam%-small.safetensors}
      [[ " $* " == *" $fam "* ]] || FILES+=("$f")
    done
    for f in "${FILES[@]}"; do mkdir -p "$PARK/$(dirname "$f")"; mv "$f" "$PARK/$f"; done
    size ;;
  restore)
    [ -d "$PARK" ] || { echo "nothing parked in $PARK"; exit 0; }
    (cd "$PARK" && find . -type f -print0) | while IFS= read -r -d '' f; do mv "$PARK/$f" "$f"; done
    rm -rf "$PARK"; git status --short | grep '^ D' && { echo "still missing" >&2; exit 1; } || echo "restored" ;;
  *) echo "usage: $0 park FAMILY... (those the call trains) | restore" >&2; exit 2 ;;
esac
