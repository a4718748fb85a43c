"""Flat regions stay flat: no colour patches in LUA's decoded x2 output of flat colours and smooth gradients.

Bound per image, on the worst 1 % of pixels' colour error against the input (lua_core.evaluation, where the
margin is explained): LUA <= max(pixel bicubic, autoencoder round trip) + 2/255.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, VAE_APPROX

from lua_core import load_model
from lua_core.evaluation import flat_region_failures
from lua_core.tiny_ae import load_tiny_autoencoder

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


@pytest.mark.skipif(not VAE_APPROX.is_dir(), reason="needs ../shared/vae_approx (CI has it)")
@pytest.mark.parametrize("path", SHIPPED)
def test_flat_colours_and_gradients_stay_flat(path):
    model = load_model(path)
    ae = load_tiny_autoencoder(model.family, [VAE_APPROX])
    torch.set_num_threads(2)
    failures = flat_region_failures(model, ae, 2)
    assert not failures, f"{path.name} paints colour patches into smooth images:\n" + "\n".join(
        f"{name}: {why}" for name, why in failures.items()
    )
