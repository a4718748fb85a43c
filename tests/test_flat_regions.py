"""Flat regions stay flat: no colour patches in LUA's decoded x2 output of flat colours and smooth gradients.

Bound per image, on the worst 1 % of pixels' colour error against the input:
    LUA <= max(pixel bicubic, autoencoder round trip) + 2/255.
Why this margin: a perfect latent upscaler outputs the latent of the true HR image, and its decode carries
the tiny autoencoder's own round-trip error (`ceiling`); pixel bicubic never decodes an upscaled latent, so
where the decoder is the larger error source LUA cannot be asked to beat it. 2/255 is two 8-bit output
levels. A colour patch (the artefact artists saw in skies) is several times larger: the models shipped
before the v2 models measured 0.03-0.05 above pixel bicubic on these images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT, VAE_APPROX

from lua_core import load_model
from lua_core.evaluation import flat_region_deviation
from lua_core.tiny_ae import load_tiny_autoencoder
from lua_core.train.data import synthetic_smooth_tile

MARGIN = 2 / 255
# Known failures, measured 2026-12-04 on the bundled models (worst image: LUA vs bound, p99 colour error; the
# numbers come from running this test's check over every image). The v2 prior is decode -> bicubic -> encode,
# i.e. a *second* autoencoder round trip after pixel bicubic, and on smooth images that round trip alone exceeds
# the bound; the back-projection step of the SD1/SD3/FLUX.2 priors brought those under it, taesdxl has no such
# step, and FLUX.1's only failure is one flat near-black image. The gate is MISSED for these and stays visible:
# strict, so a model that passes must drop its marker.
MISSED = {
    "lua-sdxl-small": "8 of 14 images over; worst p99 0.0307 vs bound 0.0228 (flat green): the prior's round trip",
    "lua-flux1-small": "1 of 14 images over; worst p99 0.0431 vs bound 0.0415 (flat near-black)",
}
SHIPPED = [
    pytest.param(p, id=p.stem, marks=pytest.mark.xfail(strict=True, reason=MISSED[p.stem]) if p.stem in MISSED else ())
    for p in sorted((ROOT / "models").glob("lua-*.safetensors"))
]


def smooth_images() -> list[tuple[str, torch.Tensor]]:
    """Six flat colours (sky, grass, skin, near-white, near-black, saturated red) and eight random gradients."""
    colours = [(0.53, 0.70, 0.92), (0.25, 0.55, 0.20), (0.87, 0.72, 0.62), (0.95, 0.95, 0.93), (0.06, 0.06, 0.08)]
    colours.append((0.85, 0.12, 0.10))
    images = [(f"flat{c}", torch.tensor(c).view(1, 3, 1, 1).expand(1, 3, 256, 256).clone()) for c in colours]
    rng = np.random.default_rng(2026)  # not the training seed
    images += [(f"smooth{i}", synthetic_smooth_tile(256, rng)) for i in range(8)]
    return images


@pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx (CI has it)")
@pytest.mark.parametrize("path", SHIPPED)
def test_flat_colours_and_gradients_stay_flat(path):
    model = load_model(path)
    ae = load_tiny_autoencoder(model.family, [VAE_APPROX])
    torch.set_num_threads(2)
    failures = []
    for name, hr in smooth_images():
        d = flat_region_deviation(model, ae, hr, 2)
        bound = max(d["pixel_bicubic"], d["ceiling"]) + MARGIN
        if d["lua"] > bound:
            failures.append(f"{name}: LUA {d['lua']:.4f} > bound {bound:.4f} {d}")
    assert not failures, f"{path.name} paints colour patches into smooth images:\n" + "\n".join(failures)
