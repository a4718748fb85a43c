"""A plain reference forward of the LUA network, written straight from the checkpoint spec.

It reads the state dict directly (no lua_core modules), works on flattened tokens,
uses an explicit softmax, rebuilds masks on every call, reflect-pads bottom/right with
F.pad and crops back, exactly as the official inference path does. The optimized
engine in lua_core must match it; benchmarks compare against it too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)


def _linear(x, sd, prefix):
    return F.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))


def _conv(x, sd, prefix):
    return F.conv2d(x, sd[prefix + ".weight"], sd[prefix + ".bias"], padding=1)


def _mask(h, w, ws, shift):
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _rel_index(ws):
    ch, cw = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([ch.flatten(), cw.flatten()])
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _block(x, sd, p, hw, ws, heads, shift):
    h, w = hw
    b, _, c = x.shape
    shortcut = x
    x = _layer_norm(x, sd, p + "norm1").view(b, h, w, c)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
    win = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    n = ws * ws
    qkv = _linear(win, sd, p + "attn.qkv").reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    table = sd[p + "attn.relative_position_bias_table"]
    bias = table[_rel_index(ws).view(-1).to(table.device)].view(n, n, -1).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if shift:
        mask = _mask(h, w, ws, shift).to(attn.device)  # built on the CPU, like the index (GPU kit: CUDA)
        nw = mask.shape[0]
        attn = attn.view(-1, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = torch.softmax(attn, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(-1, n, c)
    out = _linear(out, sd, p + "attn.proj")
    x = out.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    if shift:
        x = torch.roll(x, (shift, shift), (1, 2))
    x = shortcut + x.view(b, h * w, c)
    y = _layer_norm(x, sd, p + "norm2")
    y = _linear(F.gelu(_linear(y, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
    return x + y


def reference_forward(sd: dict, x: torch.Tensor, scale: int, window: int, input_skip: str = "none") -> torch.Tensor:
    """Official-style inference: reflect pad, trunk, one head, crop. x is [B, C, h, w]."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    x = x.float()
    _, _, h0, w0 = x.shape
    ph, pw = (window - h0 % window) % window, (window - w0 % window) % window
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    b, _, h, w = x.shape
    first = _conv(x, sd, "conv_first")
    c = first.shape[1]
    t = first.flatten(2).transpose(1, 2)
    if "patch_embed.norm.weight" in sd:
        t = _layer_norm(t, sd, "patch_embed.norm")
    i = 0
    while f"layers.{i}.conv.weight" in sd:
        start = t
        j = 0
        while f"layers.{i}.residual_group.blocks.{j}.norm1.weight" in sd:
            p = f"layers.{i}.residual_group.blocks.{j}."
            heads = sd[p + "attn.relative_position_bias_table"].shape[1]
            t = _block(t, sd, p, (h, w), window, heads, window // 2 if j % 2 else 0)
            j += 1
        img = t.transpose(1, 2).reshape(b, c, h, w)
        t = _conv(img, sd, f"layers.{i}.conv").flatten(2).transpose(1, 2) + start
        i += 1
    t = _layer_norm(t, sd, "norm")
    feat = _conv(t.transpose(1, 2).reshape(b, c, h, w), sd, "conv_after_body") + first
    hp = f"heads.x{scale}."
    y = F.leaky_relu(_conv(feat, sd, hp + "conv_before.0"), 0.01)
    k = 0
    while f"{hp}upsample.{k}.weight" in sd:
        y = _conv(y, sd, f"{hp}upsample.{k}")
        factor = int(round((y.shape[1] / sd[f"{hp}upsample.{k}.weight"].shape[1]) ** 0.5))
        y = F.pixel_shuffle(y, factor)
        k += 2
    y = _conv(y, sd, hp + "conv_last")
    if input_skip == "bicubic":
        y = y + F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    return y[:, :, : h0 * scale, : w0 * scale]
