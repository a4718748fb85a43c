#!/usr/bin/env bash
# Train the bundled v2 models (re-encode prior + residual) on CPU, one family after another; resumable.
#   bash tools/train_v2_models.sh [RUNS_DIR] [FAMILY ...]                 first generation, from scratch
#   CONTINUE=1 bash tools/train_v2_models.sh runs/v3 [FAMILY ...]         continue from the bundled files
# (default families: sdxl sd1 sd3 flux1 flux2 / with CONTINUE: sdxl sd3 flux1 sd1 flux2)
#
# First generation (bf16 decoder pass, 100 images per folder, fixed steps; how the 2026-11-28 files were made):
#   bench/input_variants.py trains both residual input variants on SDXL for the same steps and scores them on
#   held-out images (bench/results/input-variants-sdxl.json); the winner's run continues; every other family
#   trains the winner from scratch (zero residual = the pixel route) for STEPS.
# CONTINUE=1 (the second run): per family, warm start from models/lua-<family>-small.safetensors, fp32, every
#   training image of both folders, cosine over MINUTES of training (per family below), then
#   tools/select_v2_heads.py ships each head at its best residual gain (0 = prior) on held-out images 17-32,
#   bench/quality.py reports images 1-16 with the old file's numbers beside (--previous), and
#   tools/keep_if_better.py keeps the new file only if it beats the old one on every scale. Every mode writes its
#   selection records into RUNS_DIR/selection and copies them into bench/results/selection only when the new file
#   is kept (until 2026-12-07 a refused run overwrote the record of the file that ships).
# REFINE=1 with CONTINUE=1 (the third run): the same, but the prior gets one back-projection step per family
#   (arch/reencode_residual.py), at the rate measured best on held-out images 17-32 before training
#   (bench/results/prior-refinement.json); SDXL is left out there (taesdxl's round trip diverges under it).
# CANDIDATES=DIR (files trained elsewhere, e.g. the GPU sprint's DIR/train-<family>.safetensors, docs/gpu.md):
#   only the selection, report and keep-if-better steps above, per family (how the 2026-12-04 files were chosen:
#   CANDIDATES=runs/gpu bash tools/train_v2_models.sh runs/gpu).
# ERROR_INPUT=1 (the fifth run, 2026-12-05, CPU): per family, a warm start from the bundled (GPU-trained) file over
#   its own prior, with the "+error" input variant (the prior's round-trip error as an extra input; its stem
#   channels start at zero, so training starts exactly at the bundled file), 256 px tiles of 150 images per folder,
#   96 px windows with 8 latent px of context, lr 2e-4, EMA 0.995, MINUTES (default 45) of training, then the
#   same selection, report and keep-if-better steps. Its first try (FLUX.1, 45 min, the loss then decoding only a
#   window) scored below the bundled file (bench/results/selection/flux1-error-input-experiment.json), which
#   led to the edge-free window loss of train/residual.py `pixel_loss` (bench/window_decode.py).
# DECODE_CONTEXT=1 (the sixth run, 2026-12-05, CPU): ERROR_INPUT's run with the loss decoding each window together
#   with its 8 latent px (64 px) of context (train-v2 --decode-context 8), batch 4, lr 1e-4; MINUTES=42 for FLUX.1
#   gave bench/results/selection/flux1-context-decode-42min.json (not shipped: below the bundled file on held-out);
#   IMAGES=0 (every training image, 623 tiles) MINUTES=28 gave ...-context-decode-all-images.json (+0.02 / +0.01 dB
#   above it on held-out; its SEED=1 continuation below was reported and not kept).
#   INIT=FILE warm-starts from FILE instead of the bundled file (the prior still comes from the bundled file);
#   SEED=N cuts other tiles from the same images (tile positions and batches follow the seed; a new tile cache).
#   SEED=1 INIT=<the all-images run's export> MINUTES=48 gave ...-context-decode-seed1.json: +0.02 / +0.01 dB on
#   images 17-32 again, -0.07 / -0.01 dB on the report's images 1-16, so keep-if-better restored the bundled file.
#   NATIVE=F cuts that share of large photos' tiles at native resolution (train-v2 --native-fraction): the report's
#   losses come from native-resolution crops of large photos (smooth bokeh), which random content scales rarely give.
# PRIOR_HEADS=1 (2026-12-05, no training): tools/refine_prior_heads.py gives each head that ships as the prior alone
#   (SD3 x4, FLUX.2 x2) the back-projection setting best on held-out images 17-32 (PRIOR_SETTINGS="steps:rate,..."
#   to try others than its default), then the same report and keep-if-better steps. How the 2026-12-05 files were
#   made: PRIOR_HEADS=1 bash tools/train_v2_models.sh runs/prior-heads sd3 flux2. A second FLUX.2 round
#   (PRIOR_SETTINGS=2:0.8,2:1,3:0.6,3:0.7) chose 2:1, which failed tests/test_flat_regions.py and was reverted;
#   since then refine_prior_heads.py and keep_if_better.py run that check themselves and refuse a file that paints
#   colour patches into flat images the old file left flat.
# MATCH=1 (2026-12-05, no training): tools/match_decoder_heads.py gives each head the decoder-matching setting
#   (arch/reencode_residual.py `match_by_scale`: smooth areas of the output matched to the tiny decoder) best on
#   PHOTOS native-resolution crops of training-split photos plus LIMIT held-out renders 17-.. (MATCH_SETTINGS to
#   try others than its default), then the same report and keep-if-better steps:
#   MATCH=1 bash tools/train_v2_models.sh runs/match flux1 flux2     (how the 2026-12-05 FLUX.1 file was made;
#   FLUX.2 scored lower with matching and kept its file), then for SDXL, shorter:
#   MATCH=1 PHOTOS=4 LIMIT=4 MATCH_SETTINGS=10:0.1,10:0.2 bash tools/train_v2_models.sh runs/match sdxl
#   (those settings ran at the then fixed Adam step 0.05). Once the step was a setting (steps:sigma:step), the
#   2026-12-05 FLUX.2 file (x2 step 0.01, x4 0.02) was made by:
#   MATCH=1 MATCH_SETTINGS=10:0.2:0.01,10:0.2:0.02,5:0.2:0.02 bash tools/train_v2_models.sh runs/match3 flux2
#   (record: bench/results/selection/flux2-decoder-match-round1.json), and a second round over that file moved x4 to
#   15 steps of 0.01 (x2 kept its setting):
#   MATCH=1 MATCH_SETTINGS=15:0.2:0.01,10:0.2:0.005,15:0.2:0.02 bash tools/train_v2_models.sh runs/match4 flux2
#   SD3 tried it and kept its file (both settings scored lower at both scales; the report step was not run):
#   MATCH=1 MATCH_SETTINGS=10:0.2:0.05,10:0.2:0.02 bash tools/train_v2_models.sh runs/match5 sd3
# HEADS=1 (2026-12-06, CPU): per FAMILY:SCALE argument, that head (one shipped as the prior alone) learns a residual
#   over the bundled file's trunk and its own prior: train-v2 --train-heads, so only its stem and last conv learn and
#   every other head computes exactly what it did; IMAGES per folder (default 0: every training image), 256 px tiles, 96 px windows decoded with 8
#   latent px of context, batch 4, lr 3e-4, MINUTES (default 40); then select_v2_heads.py chooses that head's gain
#   alone (--heads) on held-out images 17-32, and the same report and keep-if-better steps:
#   HEADS=1 bash tools/train_v2_models.sh runs/heads flux2:2     (how the 2026-12-06 FLUX.2 file was made: x2 +0.14 dB
#   on the report, bench/results/selection/flux2-head-x2.json), and with fewer images and minutes the 2026-12-06 SD3 file
#   (x4 +0.037 dB on the report at gain 1/4, bench/results/selection/sd3-head-x4-l1-150-images.json):
#   IMAGES=150 MINUTES=30 HEADS=1 bash tools/train_v2_models.sh runs/heads-sd3 sd3:4
#   FLUX.1 x2 (a GPU-trained head, not a prior-only one) lost to the shipped head on images 17-32 and kept its file:
#   IMAGES=60 MINUTES=15 HEADS=1 bash tools/train_v2_models.sh runs/heads-flux1 flux1:2   (.../flux1-head-x2-rejected.json)
#   LOSS=mse (train-v2 --loss mse: squared error instead of L1) made the 2026-12-06 FLUX.2 x4 head (+0.043 dB on the
#   report at gain 3/4, .../flux2-head-x4.json; runs/heads-flux2-x4/flux2/cache linked to the x2 run's tile cache):
#   LOSS=mse MINUTES=30 HEADS=1 bash tools/train_v2_models.sh runs/heads-flux2-x4 flux2:4
#   and left SD3 x4 as it was on 150 images per folder (LOSS=mse IMAGES=150 MINUTES=30 ... runs/heads-sd3-mse sd3:4,
#   .../sd3-head-x4-mse-rejected.json); on every image it made the 2026-12-06 SD3 file (x4 +0.0025 dB on the report):
#   LOSS=mse IMAGES=0 MINUTES=30 HEADS=1 bash tools/train_v2_models.sh runs/heads-sd3-mse-all sd3:4
#   and left FLUX.1 x2 as it was (LOSS=mse IMAGES=0 MINUTES=25 ... runs/heads-flux1-mse-all flux1:2, .../flux1-head-x2-mse-rejected.json)
#   and SD1 x4 too (LOSS=mse IMAGES=0 MINUTES=30 ... runs/heads-sd1-mse-all sd1:4: 1223 steps, -0.021 dB at its best
#   gain on images 17-32, .../sd1-head-x4-mse-rejected.json), and made the 2026-12-06 SD3 x2 head (+0.07 dB on the report at
#   gain 3/4, .../sd3-head-x2.json): LOSS=mse IMAGES=0 MINUTES=30 HEADS=1 bash tools/train_v2_models.sh runs/s1206e sd3:2.
#   A MATCH=1 round over the squared-error FLUX.2 x4 head
#   (MATCH_SETTINGS=15:0.2:0.005,10:0.2:0.01,5:0.2:0.01 ... runs/match-f2x4 flux2) won on its selection images
#   (+0.03 / +0.03 dB) and lost on the report (-0.007 / -0.056 dB): .../flux2-decoder-match-mse-head-rejected.json.
# UPSCALER=1 (2026-12-07, CPU): per FAMILY[:SCALES] argument (default both heads), each head's prior gets a learned
#   pixel upscaler (arch/pixel_upscaler.py; `python -m lua_core train-upscaler`, MINUTES each, default 12, WIDTH and
#   DEPTH if not 32 and 5, DARK for --dark-fraction, HIGHPASS for --highpass) over the bundled file, every other weight kept; then select_v2_heads.py chooses those
#   heads' residual gains again over the new prior (a factor on the gain it shipped with) on images 17-32, and, if
#   each of those heads then beats the bundled file there (as HEADS=1 asks), the same report and keep-if-better
#   steps: UPSCALER=1 bash tools/train_v2_models.sh runs/upscaler sdxl flux1:2
#   GAINS=0.5 tries that residual gain besides 0 and 1 (the default tries 0, 1/4, 1/2, 3/4, 1); fewer is faster: a
#   FLUX.2 file scores ~75 s per image and model at both scales on 2 CPU threads of an AVX2-only CPU (its decoder-
#   matching steps run at the output size, in fp32 there: no native bf16), so the default 16 images x 6 models take about 2 h.
#   The 2026-12-07 SDXL file: UPSCALER=1 WIDTH=48 DEPTH=6 MINUTES=10 ... runs/s1207-up sdxl (x4 +0.33 dB on the report,
#   refused: zero-padded convs painted bands along flat images' edges, .../sdxl-pixel-upscaler-round1-x4-patches.json;
#   since then replicate padding and 128 synthetic tiles), then x4 again over the x2 run's file:
#   python -m lua_core train-upscaler --model runs/s1207-up/sdxl-x2.safetensors --scale 4 --data <both folders>
#     --run-dir runs/s1207-up/sdxl-x4b --minutes 10 --width 48 --depth 6 --export runs/s1207-up/sdxl-x4b.safetensors
#   select_v2_heads.py --heads x4 (.../sdxl-pixel-upscaler.json), and x2's upscaler dropped again
#   (lua_core.model.without_pixel_upscaler: with replicate padding it scored 0.0006 dB below the file on the report),
#   then the report and keep-if-better steps: x4 21.93 -> 22.40 dB, x2 unchanged.
#   The 2026-12-07 SD3 file (x4 +0.28 dB on the report, x2 unchanged): UPSCALER=1 WIDTH=48 DEPTH=6 MINUTES=10 ...
#   runs/s1207b-up sd3:4; flux1:4 the same way lost 0.10 dB on the report (.../flux1-pixel-upscaler-rejected.json);
#   sd1:4 the same way (x4 +0.29 dB) was refused for x2 -0.0012 dB, though x2 is the same tensors (decoder matching
#   varies between runs), and was then shipped by hand: the selected file copied to models/ and the report rerun.
#   Since then tools/keep_if_better.py scores the old and the new file side by side in one process.
#   flux1:4 again alone on the cores (runs/s1207d-up, 2638 steps) lost 0.12 dB on the report (one dark bokeh render
#   39.80 -> 35.01 dB; .../flux1-pixel-upscaler-rejected.json). The SDXL x4 upscaler fine-tuned through the round trip
#   (train-upscaler --loss-on round-trip, 15 min) scored below the bundled file on images 17-32 (.../sdxl-round-trip-
#   upscaler-rejected.json has the commands); it was stopped before the report.
#   The 2026-12-07 FLUX.1 file (x4 +0.18 dB on the report, x2 unchanged): runs/s1207d-up's x4 upscaler with its
#   residual's low frequencies taken out after training (train-upscaler ... --run-dir runs/s1207d-up/flux1-x4
#   --resume --highpass 4 --export runs/s1207l-ph/flux1-x4.safetensors), then UPSCALER=1 WIDTH=48 DEPTH=6 ...
#   runs/s1207l-ph flux1:4. Trained with HIGHPASS=4 from the start (runs/s1207j-hp) it scored less on images 17-32.
#   The 2026-12-07 SD3 x2 head (+0.35 dB on the report): train-upscaler --model models/lua-sd3-small.safetensors --scale 2
#     --data <both folders> --run-dir runs/s1207n/sd3-x2 --steps 2700 --export runs/s1207n/sd3-x2.safetensors, then
#     UPSCALER=1 WIDTH=48 DEPTH=6 ... runs/s1207n sd3:2 (.../sd3-pixel-upscaler-x2.json). The FLUX.1 x2 head (+0.16 dB):
#     an unconstrained run (--highpass 0 over a file without upscalers, 10 min), --resume --highpass 4 --export into
#     runs/s1207o/flux1-x2.safetensors with --model the bundled file, then UPSCALER=1 ... runs/s1207o flux1:2. A run of
#     one head writes bench/results/selection/F-pixel-upscaler-xS.json; the x4 records above predate that and are
#     named F-pixel-upscaler.json.
#   The 2026-12-07 night SD1 x2 head (+0.23 dB on the report): that evening's SD1 x2 run resumed with --highpass 4
#     --steps 5400 (per-head high-pass: x4 keeps none), exported into runs/s1208b/sd1-x2.safetensors, then UPSCALER=1
#     WIDTH=48 DEPTH=6 ... runs/s1208b sd1:2. The SDXL x2 head (+0.20 dB): train-upscaler --model
#     models/lua-sdxl-small.safetensors --scale 2 --data <both folders> --run-dir runs/s1208c/sdxl-x2 --steps 2700
#     --width 48 --depth 6 (with the learning-rate warm-up), --resume --highpass 4 --export
#     runs/s1208d/sdxl-x2.safetensors, then UPSCALER=1 WIDTH=48 DEPTH=6 ... runs/s1208d sdxl:2.
#   Upscalers trained on a GPU (bench/gpu_kit.py --train-upscalers F:S, docs/gpu.md): copy each train-F-xS.safetensors
#   to RUNS/F-xS.safetensors and run UPSCALER=1 ... RUNS F:S: a file already there is used as it is.
# Each run keeps state.pt in RUNS_DIR/...: rerunning the script continues an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs}; shift || true
SHARED=${SHARED:-../shared}
PY=${PY:-python}
DATA=("$SHARED/data/train" "$SHARED/data/photos")
common=(--data "${DATA[@]}" --vae-approx "$SHARED/vae_approx" --inputs latent+prior+pixels)

start_runs() {  # RUNS exists and holds the report the new files must beat (kept when a run resumes)
  mkdir -p "$RUNS/selection"
  [ -f "$RUNS/quality-before.json" ] || cp bench/results/quality.json "$RUNS/quality-before.json"
}

shipped_shape() {  # FILE: "width blocks" of its residual, so a warm start builds the same network
  $PY -c "import sys; from lua_core import load_model; c = load_model(sys.argv[1]).config; print(c.width, c.blocks)" "$1"
}

# select heads on images 17-32, report on 1-16, keep the new file only if it beats the old one on every scale
select_and_keep() {  # CANDIDATE FAMILY
  local cand=$1 fam=$2
  $PY tools/select_v2_heads.py --candidate "$cand" --output "$RUNS/$fam-selected.safetensors" \
      --report "$RUNS/selection/$fam.json"
  report_and_keep "$fam" "$RUNS/selection/$fam.json"
}

# the report (images 1-16) only judges a file whose selected heads all beat the bundled file on images 17-32
beat_on_selection_images() {  # SELECTION_JSON FAMILY
  local gained
  gained=$($PY -c "import json, sys; print(' '.join(str(v) for v in json.load(open(sys.argv[1]))['output_minus_current_db'].values()))" "$1")
  if ! $PY -c "import sys; sys.exit(not all(float(v) > 0 for v in sys.argv[1:]))" $gained; then
    echo "$2: the selected heads scored $gained dB against the bundled file on images 17-32; the bundled file stays" \
      "(the record stays in $1)"
    return 1
  fi
}

# RUNS/FAMILY-selected.safetensors replaces the bundled file if the report says better; only then do its selection
# records (written in RUNS/selection) go to bench/results/selection, so a refused run never overwrites the record of
# the file that ships
report_and_keep() {  # FAMILY SELECTION_JSON...
  local fam=$1 record
  shift
  cp "models/lua-$fam-small.safetensors" "$RUNS/$fam-before.safetensors"
  cp "$RUNS/$fam-selected.safetensors" "models/lua-$fam-small.safetensors"
  if $PY bench/quality.py --families "$fam" --limit 16 --update --previous "$RUNS/quality-before.json"; then
    $PY tools/keep_if_better.py --family "$fam" --before-file "$RUNS/$fam-before.safetensors" \
        --before-report "$RUNS/quality-before.json"
  else
    cp "$RUNS/$fam-before.safetensors" "models/lua-$fam-small.safetensors"
    echo "bench/quality.py failed for $fam: the old file stays" >&2
  fi
  if cmp -s "models/lua-$fam-small.safetensors" "$RUNS/$fam-before.safetensors"; then
    echo "$fam: the bundled file stays; the new file's records stay in $RUNS/selection ($*)"
  else
    for record in "$@"; do cp "$record" bench/results/selection/; done
  fi
}

if [ -n "${CANDIDATES:-}" ]; then  # files trained elsewhere (the GPU sprint's train-<family>.safetensors)
  start_runs
  for fam in ${*:-sdxl flux1 sd3 sd1 flux2}; do
    [ -f "$CANDIDATES/train-$fam.safetensors" ] && select_and_keep "$CANDIDATES/train-$fam.safetensors" "$fam"
  done
  exit 0
fi

if [ "${PRIOR_HEADS:-0}" = 1 ]; then  # no training: heads shipped as the prior alone get their best prior setting
  start_runs
  for fam in ${*:-sd3 flux2}; do
    $PY tools/refine_prior_heads.py --model "models/lua-$fam-small.safetensors" ${PRIOR_SETTINGS:+--settings "$PRIOR_SETTINGS"} \
        --output "$RUNS/$fam-selected.safetensors" --report "$RUNS/selection/$fam-prior-heads.json"
    report_and_keep "$fam" "$RUNS/selection/$fam-prior-heads.json"
  done
  exit 0
fi

if [ "${MATCH:-0}" = 1 ]; then  # no training: each head gets the decoder-matching setting best on photos + renders
  start_runs
  for fam in ${*:-flux1 flux2}; do
    $PY tools/match_decoder_heads.py --model "models/lua-$fam-small.safetensors" ${MATCH_SETTINGS:+--settings "$MATCH_SETTINGS"} \
        --photos "${PHOTOS:-6}" --limit "${LIMIT:-6}" \
        --output "$RUNS/$fam-selected.safetensors" --report "$RUNS/selection/$fam-decoder-match.json"
    report_and_keep "$fam" "$RUNS/selection/$fam-decoder-match.json"
  done
  exit 0
fi

if [ "${UPSCALER:-0}" = 1 ]; then  # each head's prior resizes with a learned pixel upscaler; then gains again
  start_runs
  for arg in ${*:-sdxl flux1 sd3 sd1 flux2}; do
    fam=${arg%:*} heads=2,4
    [ "$arg" != "$fam" ] && heads=${arg#*:}
    model="models/lua-$fam-small.safetensors"
    for head in ${heads//,/ }; do
      # a resumed run keeps its own length (minutes or steps) unless MINUTES is set
      length=(--minutes "${MINUTES:-12}")
      [ -f "$RUNS/$fam-x$head/state.pt" ] && [ -z "${MINUTES:-}" ] && length=()
      # a file already exported there is a finished run (or one trained elsewhere: the GPU kit's train-F-xS files)
      [ -f "$RUNS/$fam-x$head.safetensors" ] || $PY -m lua_core train-upscaler --model "$model" --scale "$head" --data "${DATA[@]}" --run-dir "$RUNS/$fam-x$head" \
          "${length[@]}" ${WIDTH:+--width "$WIDTH"} ${DEPTH:+--depth "$DEPTH"} ${DARK:+--dark-fraction "$DARK"} ${HIGHPASS:+--highpass "$HIGHPASS"} --resume \
          --export "$RUNS/$fam-x$head.safetensors"
      model="$RUNS/$fam-x$head.safetensors"
    done
    # only the heads whose prior changed choose a gain again; the others ship as they are (one head: its own record,
    # so a later head's run keeps the earlier head's record)
    record="$RUNS/selection/$fam-pixel-upscaler.json"
    [ "$heads" = 2,4 ] || record="$RUNS/selection/$fam-pixel-upscaler-x${heads//,/-x}.json"
    $PY tools/select_v2_heads.py --candidate "$model" --heads "x${heads//,/,x}" --output "$RUNS/$fam-selected.safetensors" \
        --report "$record" ${GAINS:+--gains "$GAINS"}
    beat_on_selection_images "$record" "$fam" || continue
    report_and_keep "$fam" "$record"
  done
  exit 0
fi

if [ "${HEADS:-0}" = 1 ]; then  # one head learns over the bundled trunk; the other heads stay exactly as shipped
  start_runs
  for arg in ${*:-flux2:2 sd3:4}; do
    fam=${arg%:*} head=${arg#*:}
    run="$RUNS/$fam"
    shipped="models/lua-$fam-small.safetensors"
    shape=$(shipped_shape "$shipped")
    resume=()
    [ -f "$run/state.pt" ] && resume=(--resume)
    $PY -m lua_core train-v2 --family "$fam" --data "${DATA[@]}" --prior-from "$shipped" --init-from "$shipped" \
        --train-heads "$head" --inputs latent+prior+pixels --width "${shape% *}" --blocks "${shape#* }" --run-dir "$run" \
        --images-per-folder "${IMAGES:-0}" --synthetic-tiles 16 --tile 256 --crop 96 --context 8 --decode-context 8 --batch 4 \
        --lr 3e-4 --loss "${LOSS:-l1}" --steps 0 --minutes "${MINUTES:-40}" --ema 0.995 --save-every 50 --amp off \
        --export "$RUNS/$fam.safetensors" --note "x$head stem and head trained over the bundled file's trunk and x$head prior (CPU)" \
        "${resume[@]}"
    $PY tools/select_v2_heads.py --candidate "$RUNS/$fam.safetensors" --heads "x$head" \
        --output "$RUNS/$fam-selected.safetensors" --report "$RUNS/selection/$fam-head-x$head.json"
    # gain 0 would ship the bundled head with a record of a residual it lacks
    beat_on_selection_images "$RUNS/selection/$fam-head-x$head.json" "$fam" || continue
    report_and_keep "$fam" "$RUNS/selection/$fam-head-x$head.json"
  done
  exit 0
fi

if [ "${ERROR_INPUT:-0}" = 1 ] || [ "${DECODE_CONTEXT:-0}" = 1 ]; then
  # DECODE_CONTEXT: the window decoded with its 64 px of context (3.6 s/step at batch 4 on 2 cores)
  loss=(--decode-context 0 --batch 8 --lr 2e-4)
  [ "${DECODE_CONTEXT:-0}" = 1 ] && loss=(--decode-context 8 --batch 4 --lr 1e-4)
  start_runs
  for fam in ${*:-flux1 sd3 flux2}; do
    run="$RUNS/$fam"
    shipped="models/lua-$fam-small.safetensors"
    shape=$(shipped_shape "$shipped")
    start=(--init-from "${INIT:-$shipped}")
    [ -f "$run/state.pt" ] && start=(--resume)
    $PY -m lua_core train-v2 --family "$fam" --data "${DATA[@]}" --prior-from "$shipped" \
        --inputs latent+prior+pixels+error --width "${shape% *}" --blocks "${shape#* }" --run-dir "$run" \
        --images-per-folder "${IMAGES:-150}" --seed "${SEED:-0}" --native-fraction "${NATIVE:-0}" --synthetic-tiles 16 --tile 256 --crop 96 --context 8 --steps 0 \
        --minutes "${MINUTES:-45}" "${loss[@]}" --ema 0.995 --save-every 100 --amp off \
        --export "$RUNS/$fam.safetensors" --note "CPU continuation of the bundled file with the +error input" "${start[@]}"
    select_and_keep "$RUNS/$fam.safetensors" "$fam"
  done
  exit 0
fi

if [ "${CONTINUE:-0}" = 1 ]; then
  start_runs
  for fam in ${*:-sdxl sd3 flux1 sd1 flux2}; do
    case $fam in sdxl) minutes=18;; sd3) minutes=15;; flux1) minutes=14;; sd1) minutes=13;; *) minutes=12;; esac
    run="$RUNS/$fam"
    refine=()
    if [ "${REFINE:-0}" = 1 ]; then
      case $fam in flux2|sd3|sd1) refine=(--refine-steps 1 --refine-rate 0.8);; flux1) refine=(--refine-steps 1 --refine-rate 0.5);;
        *) echo "no prior refinement for $fam (see bench/results/prior-refinement.json)" >&2; continue;; esac
    fi
    start=(--init-from "models/lua-$fam-small.safetensors")
    [ -f "$run/state.pt" ] && start=(--resume)
    $PY -m lua_core train-v2 --family "$fam" "${common[@]}" --run-dir "$run" --cache-dir "$RUNS/cache-$fam" \
        --steps 0 --minutes "${MINUTES:-$minutes}" --images-per-folder 0 --amp off \
        --export "$RUNS/$fam.safetensors" --note "bundled v2 model, cpu (fp32 warm-start continuation)" "${refine[@]}" "${start[@]}"
    select_and_keep "$RUNS/$fam.safetensors" "$fam"
  done
  exit 0
fi

STEPS=${STEPS:-1200}
[ -f bench/results/input-variants-sdxl.json ] || $PY bench/input_variants.py --family sdxl --steps "$STEPS" --compare-steps 200 --runs "$RUNS"
WINNER=$($PY -c "import json; print(json.load(open('bench/results/input-variants-sdxl.json'))['winner'])")
for fam in ${*:-sdxl sd1 sd3 flux1 flux2}; do
  run="$RUNS/v2-$fam"
  [ "$fam" = sdxl ] && run="$RUNS/v2-sdxl-${WINNER//+/-}"
  resume=()
  [ -f "$run/state.pt" ] && resume=(--resume)
  $PY -m lua_core train-v2 --family "$fam" --data "${DATA[@]}" --vae-approx "$SHARED/vae_approx" \
      --run-dir "$run" --cache-dir "$RUNS/cache-v2-$fam" --inputs "$WINNER" --steps "$STEPS" --minutes 0 --amp bf16 \
      --export "$RUNS/v2-$fam.safetensors" --note "bundled v2 model, cpu" "${resume[@]}"
done
