"""Flat regions stay flat: no colour patches in LUA's decoded x2 and x4 output of flat colours and smooth gradients.

Bound per image, on the worst 1 % of pixels' colour error against the input (lua_core.evaluation, where the
margin is explained): LUA <= max(pixel bicubic, autoencoder round trip) + 2/255.

All fourteen images per file and scale are measured by bench/flat_regions.py (and by tools/keep_if_better.py before
a file ships); that takes ~35 min for the five files on the 2 AVX2 cores CI runs on (their decoder-matching steps
run at the output size), so the suite does not repeat it. It holds each bundled file to the record of exactly that
file (sha256), with no patch in it, and measures again here, as the code runs now, the image nearest the bound
per file and scale.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT, VAE_APPROX

from lua_core import load_model
from lua_core.checkpoint import sha256_file
from lua_core.evaluation import FLAT_MARGIN, colour_patch_bound, flat_region_deviation, smooth_images
from lua_core.tiny_ae import load_tiny_autoencoder

# Every bundled model passes since 2026-12-05. Before, the v2 prior (decode -> bicubic -> encode, a *second*
# autoencoder round trip after pixel bicubic) exceeded the bound on smooth images: SDXL on 8 of 14 (worst p99
# 0.0307 vs bound 0.0228, flat green), FLUX.1 on one flat near-black image; the back-projection step of the
# SD1/SD3/FLUX.2 priors and the decoder matching of the SDXL and FLUX.1 heads (arch/reencode_residual.py) brought
# them under it. x4 is checked since 2026-12-06, when bench/flat_regions.py found SD1's x4 head 0.0003 over the
# bound on one gradient at its residual gain 0.25 (0.2 since). A model that fails must not ship.
SHIPPED = sorted((ROOT / "models").glob("lua-*.safetensors"))
RECORD = ROOT / "bench" / "results" / "flat-regions.json"
NEAREST = 1  # images measured again per file and scale: the one with the least room under the bound in the record
# The record and a run now differ by thread count and machine: decoder matching runs in bf16 on a CPU with native
# bf16, in fp32 elsewhere. Between the 2026-12-07 record (bf16) and the 12-08 one (fp32, AVX2 only) a matched head's
# worst error moved by up to 0.0015 (SDXL x4 on its nearest image), three quarters of a quarter margin; half the
# margin, one 8-bit level, stays far below a colour patch (0.03-0.05 over pixel bicubic, FLAT_MARGIN's comment).
RECORD_TOLERANCE = FLAT_MARGIN / 2


def record_of(path) -> dict:
    """The flat-region bench's entry for a bundled file; fails with the command that makes it."""
    rerun = f"run `python bench/flat_regions.py --update --models models/{path.name}` and commit its JSON"
    entry = json.loads(RECORD.read_text())["files"].get(path.name)
    assert entry is not None, f"{RECORD.name} has no entry for {path.name}: {rerun}"
    assert entry.get("sha256") == sha256_file(path), f"{path.name} changed since {RECORD.name} measured it: {rerun}"
    return entry


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_bench_measured_this_very_file_and_found_no_patch(path):
    entry = record_of(path)
    for scale in ("x2", "x4"):
        images = entry["as_shipped"][scale]["images"]
        assert len(images) == len(smooth_images(8)), f"{path.name} {scale}: the record misses images"
        over = {
            n: (r["lua"]["worst_error"], r["bound"]) for n, r in images.items() if r["lua"]["worst_error"] > r["bound"]
        }
        assert not over, f"{path.name} {scale} paints colour patches into smooth images (worst error, bound): {over}"


@pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx (CI has it)")
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_flat_colours_and_gradients_nearest_the_bound_stay_flat_now(path, scale):
    entry = record_of(path)
    recorded = entry["as_shipped"][f"x{scale}"]["images"]
    nearest = sorted(recorded, key=lambda n: recorded[n]["bound"] - recorded[n]["lua"]["worst_error"])[:NEAREST]
    side = json.loads(RECORD.read_text())["side"]
    images = dict(smooth_images(side))
    model = load_model(path)
    ae = load_tiny_autoencoder(model.family, [VAE_APPROX])
    torch.set_num_threads(2)
    for name in nearest:
        d = flat_region_deviation(model, ae, images[name], scale)
        bound = colour_patch_bound(d)
        assert d["lua"] <= bound, (
            f"{path.name} x{scale} paints a colour patch into {name}: LUA {d['lua']:.4f} > {bound:.4f}"
        )
        was = recorded[name]["lua"]["worst_error"]
        assert abs(d["lua"] - was) <= RECORD_TOLERANCE, (
            f"{path.name} x{scale} on {name}: worst error {d['lua']:.4f} now, {was:.4f} in {RECORD.name}; the code "
            "changed what the file outputs: run `python bench/flat_regions.py` again"
        )
