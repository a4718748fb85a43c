"""Does the v2 training loss measure what inference gets? Window decode vs whole-tile decode, on training tiles.

    python bench/window_decode.py --candidate runs/err/flux1.safetensors --tiles runs/flux1-err/cache/tiles-*.safetensors

A training step decodes only a window of each crop (train/residual.py `pixel_loss`); inference decodes the whole
image. For the prior alone (the candidate with its heads zeroed) and for the trained candidate, on the same
training tiles: the loss as a step computed it before the fix (window decode, no whole-tile baseline) and the L1
of the whole tile decoded at once (16 px border trimmed), both against HR. A residual that lowers the first far
more than the second learnt the window's edges, which inference never has. Writes
bench/results/window-decode-<family>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lua_core.model import load_model  # noqa: E402
from lua_core.train.prior_tiles import TileCrops  # noqa: E402
from lua_core.train.residual import ResidualTrainConfig, crop_latent, pixel_loss  # noqa: E402


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", required=True, help="a v2 file trained with window-decode losses")
    p.add_argument("--tiles", required=True, help="the run's tile cache (tiles-<key>.safetensors)")
    p.add_argument("--count", type=int, default=48, help="tiles scored (a seeded random sample)")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--output", default="")
    args = p.parse_args()
    from safetensors.torch import load_file

    candidate = load_model(args.candidate)
    prior = copy.deepcopy(candidate)
    for head in prior.net.heads.values():
        head.weight.zero_()
        head.bias.zero_()
    tiles = load_file(args.tiles)
    n = tiles["hr"].shape[0]
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: args.count].tolist()
    cfg = ResidualTrainConfig(  # the window decoded alone: the loss before the decode context
        family=candidate.family.name, data=("-",), crop=args.crop, context=args.context, decode_context=0
    )
    results = {}
    for s in candidate.scales:
        crops = TileCrops(tiles, s, crop_latent(cfg, s), seed=5)
        for name, model in (("prior", prior), ("candidate", candidate)):
            window, whole = 0.0, 0.0
            for i in picks:
                batch = {k: v[None] for k, v in crops[i].items()}  # no decoded prior: the window decode alone
                window += pixel_loss(model.net, batch, s, cfg, nullcontext()).item() / len(picks)
                decoded = model.net.prior.decoder(model.net.upscale_scaled(tiles[f"z{s}"][i : i + 1], s))
                hr = tiles["hr"][i : i + 1].float() / 255
                whole += F.l1_loss(decoded[..., 16:-16, 16:-16], hr[..., 16:-16, 16:-16]).item() / len(picks)
            row = results.setdefault(f"x{s}", {})
            row[name] = {"window_l1": round(window, 5), "whole_tile_l1": round(whole, 5)}
            print(s, name, row[name], flush=True)
    report = {
        "benchmark": "window-decode",
        "date": time.strftime("%Y-%m-%d"),
        "command": "bench/window_decode.py " + " ".join(sys.argv[1:]),
        "candidate": Path(args.candidate).name,
        "candidate_provenance": candidate.info.provenance,
        "family": candidate.family.name,
        "tiles": f"{len(picks)} of {n} training tiles of {Path(args.tiles).name}",
        "results": results,
    }
    out = Path(args.output or ROOT / "bench" / "results" / f"window-decode-{candidate.family.name}.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
