"""Decide which heads of a trained v2 file ship, on held-out images the quality report does not score.

    python tools/select_v2_heads.py --candidate runs/v3/sdxl.safetensors --output runs/v3/sdxl-selected.safetensors

Images: the held-out split of ../shared/data/train (bench/quality.py's rule, never trained on) after the
first --skip of them, which are the ones `bench/quality.py --limit 16` reports; so a head is chosen on other
images than the ones its score is published on. Per head, the candidate's residual is scored at the gains
of --gains (the head's last conv scaled by g, so the output is prior + g * residual exactly): 0 is the prior
alone (decode -> bicubic -> encode), 1 the candidate as trained. Each head ships at its best gain; a head whose
best gain is 0 is zeroed and named in the provenance (`residual_disabled`), any other gain below 1 is recorded
as `residual_gain`. (A residual that adds texture in the wrong phase costs PSNR at full strength while a part
of it still helps: GPU-trained x4 heads scored 0.2 dB below the prior at gain 1.) The current bundled file's
score on the same images is recorded too (--report), so the numbers say what a replacement would change.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from lua_core.data_split import held_out_images  # noqa: E402
from lua_core.engine import upscale_latent  # noqa: E402
from lua_core.evaluation import hr_crop, lr_latent  # noqa: E402
from lua_core.metrics import psnr  # noqa: E402
from lua_core.model import LUAModel, load_model  # noqa: E402
from lua_core.tiny_ae import load_tiny_autoencoder  # noqa: E402

WHY = (
    "the trained residual scored below the prior (decode -> bicubic -> encode) at every gain tried on held-out "
    "images of ../shared/data/train (tools/select_v2_heads.py), so these heads ship as the prior alone"
)
GAIN_WHY = "best of the gains tried on held-out images of ../shared/data/train (tools/select_v2_heads.py)"


def with_head_gains(model: LUAModel, gains: dict[str, float]) -> LUAModel:
    """A copy of a v2 model whose named heads ("x2", ...) return prior + gain * residual (gain 0: the prior alone)."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name, gain in gains.items():
            net.heads[name].weight.mul_(gain)
            net.heads[name].bias.mul_(gain)
    return LUAModel(net, copy.deepcopy(model.info), model.name)


@torch.no_grad()
def scores(
    models: dict[str, LUAModel], ae, images: list[Path], max_side: int, scales: tuple[int, ...] = ()
) -> dict[str, dict[str, float]]:
    """Mean decoded PSNR per scale (default: every head) and model over `images` (the bench/quality.py protocol)."""
    scales = scales or next(iter(models.values())).scales
    sums = {f"x{s}": dict.fromkeys(models, 0.0) for s in scales}
    for i, path in enumerate(images):
        hr = hr_crop(path, max_side)
        for s in scales:
            z = lr_latent(ae, hr, s)
            for name, model in models.items():
                sums[f"x{s}"][name] += psnr(ae.decode(upscale_latent(model, z, s)).clamp(0, 1), hr).item()
        print(f"  {i + 1}/{len(images)} images", file=sys.stderr)
    return {sc: {k: round(v / len(images), 4) for k, v in d.items()} for sc, d in sums.items()}


def add_selection_image_args(p: argparse.ArgumentParser) -> None:
    """The options naming the held-out images a choice is made on (and how they are scored)."""
    p.add_argument("--data", default=str(SHARED / "data" / "train"))
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--val-fraction", type=float, default=0.08)
    p.add_argument("--max-side", type=int, default=384)
    p.add_argument("--skip", type=int, default=16, help="held-out images reserved for the quality report")
    p.add_argument("--limit", type=int, default=16)


def selection_images(args: argparse.Namespace) -> list[Path]:
    """Held-out images --skip to --skip + --limit (the quality report scores the first --skip)."""
    images = held_out_images(args.data, args.val_fraction)[args.skip : args.skip + args.limit]
    if not images:
        raise SystemExit(f"no held-out images left in {args.data} after --skip {args.skip}")
    return images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", required=True, help="a trained v2 .safetensors")
    p.add_argument("--output", required=True, help="where the file with the chosen heads goes")
    p.add_argument(
        "--current", default="", help="the bundled file it would replace (default: models/lua-<family>-small)"
    )
    p.add_argument("--report", default="", help="JSON with the scores and the choice (default: --output + .json)")
    add_selection_image_args(p)
    p.add_argument("--gains", default="0,0.25,0.5,0.75,1", help="residual gains to try per head (0 and 1 included)")
    p.add_argument(
        "--heads", default="", help="heads to choose a gain for, e.g. x2 (default: every head); the others ship as "
        "the candidate has them, with its record of their gains (a file trained with --train-heads)"
    )
    args = p.parse_args()
    gains = sorted({0.0, 1.0, *(float(g) for g in args.gains.split(","))})

    candidate = load_model(args.candidate)
    if candidate.info.arch != "reencode_residual":
        raise SystemExit(f"{args.candidate} is {candidate.info.title()}; only v2 files have heads to select")
    family = candidate.family.name
    current_path = Path(args.current or ROOT / "models" / f"lua-{family}-small.safetensors")
    heads = args.heads.split(",") if args.heads else [f"x{s}" for s in candidate.scales]
    if not set(heads) <= {f"x{s}" for s in candidate.scales}:
        raise SystemExit(f"--heads {args.heads}: {args.candidate} has heads {', '.join(f'x{s}' for s in candidate.scales)}")
    models = {f"gain{g:g}": with_head_gains(candidate, dict.fromkeys(heads, g)) for g in gains if g != 1}
    models.update(candidate=candidate, current=load_model(current_path))
    models["prior"] = models.pop("gain0")
    images = selection_images(args)
    ae = load_tiny_autoencoder(candidate.family, [args.vae_approx])
    t0 = time.time()
    per_scale = scores(models, ae, images, args.max_side, tuple(int(h[1:]) for h in heads))
    name_of = {g: "prior" if g == 0 else "candidate" if g == 1 else f"gain{g:g}" for g in gains}
    # the best gain per head; ties go to the smaller gain (the prior on a tie, as before)
    best = {sc: max(gains, key=lambda g, m=m: (m[name_of[g]], -g)) for sc, m in per_scale.items()}
    chosen = with_head_gains(candidate, {sc: g for sc, g in best.items() if g != 1})
    prov = dict(chosen.info.provenance)  # the record of heads not chosen here stays
    disabled = sorted({*(h for h in prov.get("residual_disabled", []) if h not in best), *(h for h, g in best.items() if not g)})
    gain_record = {h: g for h, g in prov.get("residual_gain", {}).items() if h not in best}
    # a candidate that already ships a head at a gain (a bundled file with a new prior, UPSCALER=1 in
    # tools/train_v2_models.sh) scales that head again: the record keeps the gain over the residual as trained
    earlier = candidate.info.provenance.get("residual_gain", {})
    gain_record.update({sc: round(g * earlier.get(sc, 1.0), 4) for sc, g in best.items() if 0 < g * earlier.get(sc, 1.0) < 1})
    for key in ("residual_disabled", "residual_disabled_why", "residual_gain", "residual_gain_why"):
        prov.pop(key, None)
    if disabled:
        prov.update(residual_disabled=disabled, residual_disabled_why=WHY)
    if gain_record:
        prov.update(residual_gain=gain_record, residual_gain_why=GAIN_WHY)
    chosen.info.provenance = prov
    chosen.save(args.output)
    shipped = {sc: per_scale[sc][name_of[g]] for sc, g in best.items()}
    report = {
        "candidate": str(args.candidate),
        "current": str(current_path),
        "family": family,
        "images": [p.name for p in images],
        "max_side": args.max_side,
        "psnr": per_scale,
        "gains_tried": gains,
        "gain": best,
        "residual_disabled": disabled,
        "output_psnr": shipped,
        "output_minus_current_db": {sc: round(shipped[sc] - m["current"], 4) for sc, m in per_scale.items()},
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.report or f"{args.output}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("family", "psnr", "gain", "output_minus_current_db")}))


if __name__ == "__main__":
    main()
