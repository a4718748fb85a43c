"""The network: official layout (keys, shapes, buffers) and equality with the plain reference forward."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from reference_lua import reference_forward

from lua_core import LUAConfig, ModelInfo, SwinIRMultiHead
from lua_core.arch.swinir_multihead import (
    WindowLayout,
    relative_position_index,
    shift_mask_patterns,
    shift_window_mask,
    window_order,
)
from lua_core.engine import run_network
from lua_core.model import LUAModel


def test_official_layout_counts(official_state_dict):
    sd = official_state_dict
    assert len(sd) == 556
    assert sum(k.endswith("relative_position_index") for k in sd) == 36
    assert sum(k.endswith("attn_mask") for k in sd) == 18
    params = [k for k in sd if not k.endswith(("relative_position_index", "attn_mask"))]
    assert len(params) == 502
    assert sum(sd[k].numel() for k in params) == 54_917_584
    trunk = sum(sd[k].numel() for k in params if not k.startswith("heads."))
    assert trunk == 46_103_472
    assert sum(sd[k].numel() for k in params if k.startswith("heads.x2.")) == 3_226_896
    assert sum(sd[k].numel() for k in params if k.startswith("heads.x4.")) == 5_587_216


def test_official_layout_shapes_and_dtypes(official_state_dict):
    sd = official_state_dict
    blk = "layers.3.residual_group.blocks.{}."
    assert sd["conv_first.weight"].shape == (360, 16, 3, 3)
    assert sd[blk.format(0) + "attn.relative_position_bias_table"].shape == (961, 12)
    assert sd[blk.format(0) + "attn.relative_position_index"].shape == (256, 256)
    assert sd[blk.format(0) + "attn.relative_position_index"].dtype == torch.int64
    assert sd[blk.format(1) + "attn_mask"].shape == (4, 256, 256)
    assert sd[blk.format(1) + "attn_mask"].dtype == torch.float32
    assert blk.format(0) + "attn_mask" not in sd
    assert sd["heads.x4.upsample.2.weight"].shape == (1024, 256, 3, 3)
    assert sd["heads.x2.conv_last.weight"].shape == (16, 256, 3, 3)
    forbidden = ("mean", "absolute_pos_embed", "conv_before_upsample.0.weight", "upsample.0.weight", "conv_last.weight")
    for key in forbidden:
        assert key not in sd
    assert not any(k.startswith(("patch_unembed.", "layers.0.patch_embed")) for k in sd)
    assert not any(".conv_before.1." in k or ".upsample.1." in k or ".upsample.3." in k for k in sd)


def test_relative_position_index_follows_spec_formula():
    idx = relative_position_index(16)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    r, c = rows.flatten(), cols.flatten()
    expected = (r[:, None] - r[None, :] + 15) * 31 + (c[:, None] - c[None, :] + 15)
    assert torch.equal(idx, expected)
    assert idx.min() == 0 and idx.max() == 960


def test_shift_mask_follows_spec_rule():
    mask = shift_window_mask(32, 32, 16, 8)
    assert mask.shape == (4, 256, 256)
    region = lambda v: 0 if v < 16 else (1 if v < 24 else 2)  # noqa: E731
    labels = torch.tensor([[3 * region(y) + region(x) for x in range(32)] for y in range(32)])
    for wy in range(2):
        for wx in range(2):
            lab = labels[wy * 16 : wy * 16 + 16, wx * 16 : wx * 16 + 16].flatten()
            expected = torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
            assert torch.equal(mask[wy * 2 + wx], expected)


# each head once, each on a size of its own: whole windows (32) and padded ones (21 x 35); the body is the same at
# both scales, so the other two pairs added ~85 s on 2 CPU cores and nothing the small config's cases do not check
@pytest.mark.parametrize("scale,size", [(2, (32, 32)), (4, (21, 35))])
def test_official_config_matches_reference(official_state_dict, size, scale):
    net = SwinIRMultiHead(LUAConfig()).eval()
    net.load_state_dict(official_state_dict, strict=True)
    model = LUAModel(net, ModelInfo(LUAConfig(), None))
    x = torch.randn(1, 16, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = run_network(model, x, scale)
        ref = reference_forward(official_state_dict, x, scale, 16)
    assert ours.shape == (1, 16, size[0] * scale, size[1] * scale)
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("size", [(16, 24), (24, 40), (13, 30), (9, 9)])
@pytest.mark.parametrize("scale", [2, 4])
def test_small_config_matches_reference(size, scale):
    model = make_model(channels=4, depths=(2, 3), num_heads=(2, 4))
    x = torch.randn(2, 4, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = run_network(model, x, scale)
        ref = reference_forward(model.net.state_dict(), x, scale, 8)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_training_path_matches_inference_path():
    """The batched attention used under autograd gives the same numbers as the fused inference path."""
    model = make_model()
    x = torch.randn(3, 4, 24, 16)
    with torch.no_grad():
        fast = model.net(x, 2)
    x.requires_grad_(True)
    slow = model.net(x, 2)
    assert torch.allclose(fast, slow.detach(), atol=1e-5)
    slow.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_size_cache_is_bounded_and_harmless():
    model = make_model()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        first = model.net(x, 2)
        for s in range(8, 8 * 20, 8):
            model.net(torch.randn(1, 4, 8, s), 2)
        again = model.net(x, 2)
    assert len(model.net._size_cache) <= 16
    assert torch.equal(first, again)


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_input_skip(scale):
    """Our small models may learn a residual over bicubic; at init (zeroed last conv) they are exactly bicubic."""
    import torch.nn.functional as F

    fresh = make_model(input_skip="bicubic")
    x = torch.randn(1, 4, 16, 24)
    with torch.no_grad():
        y = fresh.net(x, scale)
    assert torch.allclose(y, F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False), atol=1e-6)
    model = make_model(input_skip="bicubic")
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        x = torch.randn(1, 4, 13, 21)
        ours = run_network(model, x, scale)
        ref = reference_forward(model.net.state_dict(), x, scale, 8, input_skip="bicubic")
    assert (ours - ref).abs().max().item() <= 1e-4


def test_new_weights_take_effect_immediately():
    """No cached tensor may outlive a weight change (load_state_dict between calls)."""
    model = make_model()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        a = model.net(x, 2)
        other = make_model(seed=9).net.state_dict()
        model.net.load_state_dict(other)
        b = model.net(x, 2)
        fresh = make_model(seed=9).net(x, 2)
    assert not torch.equal(a, b) and torch.equal(b, fresh)


def test_moving_the_model_drops_cached_size_tensors():
    model = make_model()
    with torch.no_grad():
        model.net(torch.randn(1, 4, 16, 16), 2)
    assert model.net._size_cache
    model.to(dtype=torch.bfloat16)
    assert not model.net._size_cache


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (64, 32), (8, 24)])
def test_shift_mask_patterns_give_every_windows_mask(size):
    """Grouping windows by pattern reproduces the per-window shift mask of the spec rule at any size."""
    h, w = size
    masks = shift_window_mask(h, w, 8, 4)
    patterns = shift_mask_patterns(8, 4)
    layout = WindowLayout.build(h, w, 8, 4, torch.device("cpu"))
    order = window_order(h, w, 8, 4)  # [nW, N] row-major windows
    seen = 0
    for (count, pattern), tokens in zip(layout.groups, layout.group_tokens):
        for win in tokens.view(count, 64):
            index = next(i for i in range(order.shape[0]) if torch.equal(order[i], win))
            assert torch.equal(masks[index], patterns[pattern])
            seen += 1
    assert seen == layout.windows == (h // 8) * (w // 8)


def test_a_batch_matches_one_image_at_a_time():
    """Windows of all images are grouped together (fewer attention calls); each image's result is unchanged."""
    model = make_model()
    x = torch.randn(3, 4, 24, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        together = model.net(x, 2)
        alone = torch.cat([model.net(x[i : i + 1], 2) for i in range(3)])
    assert (together - alone).abs().max().item() <= 1e-5


def test_padded_head_dim_matches_reference(official_state_dict, monkeypatch):
    """The CUDA layout (head dim 30 zero-padded to 32 for the fused SDPA kernels) computes the same function."""
    from lua_core.arch import swinir_multihead

    monkeypatch.setitem(swinir_multihead.HEAD_DIM_MULTIPLE, "cpu", 8)
    net = SwinIRMultiHead(LUAConfig()).eval()
    net.load_state_dict(official_state_dict, strict=True)
    model = LUAModel(net, ModelInfo(LUAConfig(), None))
    x = torch.randn(1, 16, 21, 35, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ours = run_network(model, x, 2)
        ref = reference_forward(official_state_dict, x, 2, 16)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_cached_masks_follow_in_place_weight_changes_and_moves():
    model = make_model()
    attn = model.net.layers[0].residual_group.blocks[1].attn
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        before = model.net(x, 2)
        assert attn._mask_cache is not None
        cached = attn._mask_cache[1]
        assert attn.attention_masks(torch.float32, x.device) is cached  # a hit: no recompute
        attn.relative_position_bias_table.mul_(3.0)  # an optimizer-style in-place update
        after = model.net(x, 2)
        assert attn.attention_masks(torch.float32, x.device) is not cached
    assert not torch.allclose(before, after)
    with torch.no_grad():
        attn.relative_position_bias_table.div_(3.0)
        assert torch.allclose(model.net(x, 2), before, atol=1e-6)
    model.to(dtype=torch.bfloat16)
    assert attn._mask_cache is None


def test_attention_masks_work_on_inference_tensors_and_follow_new_weights():
    """ComfyUI builds and runs models under torch.inference_mode: their tensors have no version counter."""
    from conftest import make_model

    x = torch.randn(1, 4, 16, 16)
    with torch.inference_mode():
        model = make_model()
        first = model.net(x, 2)
        again = model.net(x, 2)
        assert torch.equal(first, again)
        sd = {k: v.clone() for k, v in model.net.state_dict().items()}
        for k in sd:
            if k.endswith("relative_position_bias_table"):
                sd[k] += 1.0
        model.net.load_state_dict(sd)
        assert not torch.equal(model.net(x, 2), first), "cached masks outlived load_state_dict"
