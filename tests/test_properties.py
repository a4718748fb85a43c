"""Property tests: any shape 1..80, batch 1..3, scale in [1, 4] gives the exact shape and finite values."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lua_core import LatentInputError, upscale_latent

MODEL = make_model(channels=4, embed_dim=16, depths=(1, 1), num_heads=(2, 2), head_num_feat=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 80),
    w=st.integers(1, 80),
    batch=st.integers(1, 3),
    scale=st.one_of(st.sampled_from([1.0, 2.0, 4.0]), st.floats(1.0, 4.0, allow_nan=False)),
    tile=st.sampled_from([None, 32, 48]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_gives_exact_shape_and_finite_values(h, w, batch, scale, tile, seed):
    x = torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed))
    y = upscale_latent(MODEL, x, scale, tile_size=tile)
    assert y.shape == (batch, 4, round(h * scale), round(w * scale))
    assert torch.isfinite(y).all()
    if scale == 1.0:
        assert torch.equal(x, y)


VIDEO_MODEL = make_model(channels=4, embed_dim=16, depths=(1, 1), num_heads=(2, 2), head_num_feat=8)
VIDEO_MODEL.info.family = dataclasses.replace(VIDEO_MODEL.info.family, video=True)  # no real family is (yet)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 3), h=st.integers(1, 40), w=st.integers(1, 40), scale=st.floats(1.0, 4.0))
def test_video_shapes_for_a_video_family(t, h, w, scale):
    x = torch.randn(1, 4, t, h, w)
    y = upscale_latent(VIDEO_MODEL, x, scale)
    assert y.shape == (1, 4, t, round(h * scale), round(w * scale))
    assert torch.isfinite(y).all()


@settings(max_examples=15, deadline=None)
@given(c=st.sampled_from([4, 12, 16, 32, 48, 64, 128]), t=st.integers(1, 3), h=st.integers(1, 40))
def test_image_families_refuse_every_5d_latent(c, t, h):
    with pytest.raises(LatentInputError, match=r"^expected an image latent \[B, C, h, w\], got a 5-D video latent"):
        upscale_latent(MODEL, torch.randn(1, c, t, h, h), 2.0)
