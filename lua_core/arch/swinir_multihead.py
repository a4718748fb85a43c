"""SwinIR trunk shared by scale-specific pixel-shuffle heads: the LUA network.

Module and buffer names follow the official LUA-FLUX checkpoint so that it loads with
`load_state_dict(strict=True)` (see docs/checkpoint-format.md). Inside the trunk the
activations stay in `[B, H, W, C]` layout: `permute(0, 3, 1, 2)` of that is a
channels-last NCHW view, so the 3x3 convs and the token ops share memory without copies.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -100.0  # the official shift-mask value; not -inf, so a fully masked row stays finite


@dataclass(frozen=True)
class LUAConfig:
    """Every hyperparameter that changes the weights' shapes or the forward pass."""

    in_chans: int = 16
    out_chans: int = 16
    embed_dim: int = 360
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (12, 12, 12, 12, 12, 12)
    window_size: int = 16
    mlp_ratio: float = 2.0
    img_size: int = 32
    head_num_feat: int = 256
    scales: tuple[int, ...] = (2, 4)
    qkv_bias: bool = True
    patch_norm: bool = True
    input_skip: str = "none"  # "bicubic": heads predict a residual over the bicubic-upsampled input
    drop_path_rate: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        object.__setattr__(self, "scales", tuple(sorted(int(s) for s in self.scales)))
        problems = []
        if len(self.depths) != len(self.num_heads) or not self.depths:
            problems.append(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and equally long")
        if any(self.embed_dim % h for h in self.num_heads):
            problems.append(f"embed_dim {self.embed_dim} is not divisible by every head count {self.num_heads}")
        if self.img_size % self.window_size or self.img_size < self.window_size:
            problems.append(f"img_size {self.img_size} must be a positive multiple of window_size {self.window_size}")
        if not self.scales or any(s not in (2, 3, 4, 8) for s in self.scales):
            problems.append(f"scales {self.scales} must be a non-empty subset of 2, 3, 4, 8")
        if self.input_skip not in ("none", "bicubic"):
            problems.append(f"input_skip {self.input_skip!r} must be 'none' or 'bicubic'")
        if self.input_skip == "bicubic" and self.in_chans != self.out_chans:
            problems.append("input_skip 'bicubic' needs in_chans == out_chans")
        if problems:
            raise ValueError("invalid LUA config: " + "; ".join(problems))

    @property
    def head_names(self) -> list[str]:
        """Names of the heads in ModuleDict order, e.g. ['x2', 'x4']."""
        return [f"x{s}" for s in self.scales]

    def to_json(self) -> str:
        """JSON text of this config (as stored in checkpoint metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> LUAConfig:
        """Build a config from a dict, refusing unknown keys."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LUA config keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


FLUX_OFFICIAL_CONFIG = LUAConfig()


# --------------------------------------------------------------------------- index math


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the (2w-1)^2 bias table for every token pair of a w x w window (row-major)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def shift_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Additive mask [nW, N, N] stopping shifted windows from mixing regions that were not adjacent."""
    labels = torch.zeros(height, width)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            labels[rows, cols] = 3 * i + j
    win = (
        labels.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    )
    same = win[:, :, None] == win[:, None, :]
    return torch.where(same, 0.0, MASK_VALUE)


def window_order(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Flat source index of every token in (cyclically shifted) window order, shape [nW, N].

    Gathering `x.view(B, H*W, C)[:, idx.flatten()]` equals rolling by (-shift, -shift) and
    then cutting windows (row-major windows, row-major tokens): one copy instead of three.
    """
    rows = (torch.arange(height) + shift) % height
    cols = (torch.arange(width) + shift) % width
    flat = rows[:, None] * width + cols[None, :]
    return flat.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window * window)


@dataclass
class WindowLayout:
    """How one kind of block (plain or shifted) cuts a padded image into windows.

    Windows are reordered by shift-mask pattern: every window of a group shares one
    [N, N] mask (there are at most four: none, bottom row, right column, corner), so
    attention runs once per group with a broadcast [1, nH, N, N] mask instead of a
    materialised per-window one.
    """

    order: torch.Tensor  # [H*W] gather index, tokens in window order
    inverse: torch.Tensor  # [H*W] gather index back to row-major
    groups: list[tuple[int, torch.Tensor | None]]  # (windows, shared [N, N] mask or None), in window order

    @property
    def windows(self) -> int:
        return sum(count for count, _ in self.groups)

    @property
    def shifted(self) -> bool:
        return any(mask is not None for _, mask in self.groups)

    def full_mask(self) -> torch.Tensor:
        """[nW, N, N] mask in window order (for the batched training path only)."""
        ref = next(m for _, m in self.groups if m is not None)
        return torch.cat([ref.new_zeros(c, *ref.shape) if m is None else m.expand(c, -1, -1) for c, m in self.groups])

    @classmethod
    def build(cls, height: int, width: int, window: int, shift: int, device: torch.device) -> WindowLayout:
        order = window_order(height, width, window, shift)
        groups: list[tuple[int, torch.Tensor | None]] = [(order.shape[0], None)]
        if shift:
            masks = shift_window_mask(height, width, window, shift)
            patterns, pattern_of = torch.unique(masks, dim=0, return_inverse=True)
            zero = [i for i in range(len(patterns)) if not patterns[i].any()]
            ranks = zero + [i for i in range(len(patterns)) if i not in zero]  # unmasked group first
            perm = torch.cat([torch.nonzero(pattern_of == r).flatten() for r in ranks])
            order = order[perm]
            groups = [(int((pattern_of == r).sum()), None if r in zero else patterns[r].to(device)) for r in ranks]
        order = order.flatten()
        return cls(order.to(device), torch.argsort(order).to(device), groups)


@dataclass
class SizeContext:
    """Per-size constants shared by every block."""

    height: int
    width: int
    plain: WindowLayout
    shifted: WindowLayout

    @classmethod
    def build(cls, height: int, width: int, window: int, device: torch.device) -> SizeContext:
        plain = WindowLayout.build(height, width, window, 0, device)
        return cls(height, width, plain, WindowLayout.build(height, width, window, window // 2, device))


# --------------------------------------------------------------------------- modules


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.head_dim = dim // num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """[nH, N, N] bias gathered from the table (one contiguous gather; cheap, so not cached)."""
        n = self.window * self.window
        table = self.relative_position_bias_table
        return table.t().index_select(1, self.relative_position_index.view(-1)).view(-1, n, n)

    def forward(self, windows: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """windows [B*nW, N, C] in `layout` order."""
        bnw, n, c = windows.shape
        qkv = self.qkv(windows).view(bnw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.position_bias().to(q.dtype).unsqueeze(0)
        if not layout.shifted:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        elif torch.is_grad_enabled() and (bias.requires_grad or q.requires_grad):
            # Training: one batched call (fused CPU kernels cannot take a mask that needs gradients anyway).
            nw = layout.windows
            mask = (layout.full_mask().to(q.dtype).unsqueeze(1) + bias).unsqueeze(0)
            q, k, v = (t.reshape(bnw // nw, nw, self.num_heads, n, self.head_dim) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            # Inference: one fused SDPA call per image and mask group, each with a broadcast 4-D mask
            # (a 5-D or per-window mask would push SDPA onto its slow math path or copy the mask).
            masks = [bias if m is None else bias + m.to(q.dtype) for _, m in layout.groups]
            nw = layout.windows
            parts = []
            for image in range(0, bnw, nw):
                start = image
                for (count, _), mask in zip(layout.groups, masks):
                    j = slice(start, start + count)
                    parts.append(F.scaled_dot_product_attention(q[j], k[j], v[j], attn_mask=mask))
                    start += count
            out = torch.cat(parts)
        out = out.reshape(bnw, self.num_heads, n, self.head_dim).transpose(1, 2).reshape(bnw, n, c)
        return self.proj(out)


class DropPath(nn.Module):
    """Stochastic depth for training; identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SwinBlock(nn.Module):
    def __init__(self, cfg: LUAConfig, dim: int, num_heads: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = cfg.window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, cfg.window_size, num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, round(dim * cfg.mlp_ratio))
        self.drop_path = DropPath(drop_path)
        mask = shift_window_mask(cfg.img_size, cfg.img_size, cfg.window_size, shift) if shift else None
        # persistent because the official file stores it (odd blocks only; None buffers are not saved)
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, ctx: SizeContext) -> torch.Tensor:
        """x [B, H*W, C] tokens, row-major, H and W multiples of the window."""
        b, hw, c = x.shape
        layout = ctx.shifted if self.shift else ctx.plain
        y = self.norm1(x).index_select(1, layout.order).view(-1, self.window * self.window, c)
        y = self.attn(y, layout).view(b, hw, c).index_select(1, layout.inverse)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ResidualGroup(nn.Module):
    def __init__(self, cfg: LUAConfig, depth: int, num_heads: int, drop_paths: list[float]) -> None:
        super().__init__()
        half = cfg.window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(cfg, cfg.embed_dim, num_heads, half if j % 2 else 0, drop_paths[j]) for j in range(depth)
        )


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, a 3x3 conv, and a skip."""

    def __init__(self, cfg: LUAConfig, depth: int, num_heads: int, drop_paths: list[float]) -> None:
        super().__init__()
        self.residual_group = ResidualGroup(cfg, depth, num_heads, drop_paths)
        self.conv = nn.Conv2d(cfg.embed_dim, cfg.embed_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, ctx: SizeContext) -> torch.Tensor:
        y = x
        for block in self.residual_group.blocks:
            y = block(y, ctx)
        b, _, c = x.shape
        img = y.view(b, ctx.height, ctx.width, c).permute(0, 3, 1, 2)  # channels-last view, no copy
        return x + self.conv(img).permute(0, 2, 3, 1).reshape(b, -1, c)


class PatchEmbedNorm(nn.Module):
    """Holds only the `patch_embed.norm` LayerNorm (patch size 1: embedding is a reshape)."""

    def __init__(self, dim: int, use_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if use_norm else nn.Identity()


class PixelShuffleHead(nn.Module):
    """conv -> LeakyReLU(0.01) -> (conv, PixelShuffle) per factor -> conv."""

    def __init__(self, in_dim: int, num_feat: int, out_chans: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv_before = nn.Sequential(nn.Conv2d(in_dim, num_feat, 3, 1, 1), nn.LeakyReLU(0.01))
        factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        layers: list[nn.Module] = []
        for f in factors:
            layers += [nn.Conv2d(num_feat, f * f * num_feat, 3, 1, 1), nn.PixelShuffle(f)]
        self.upsample = nn.Sequential(*layers)
        self.conv_last = nn.Conv2d(num_feat, out_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.upsample(self.conv_before(x)))


class SwinIRMultiHead(nn.Module):
    """The LUA network. `forward(x, scale)` expects H, W already padded to the window size."""

    def __init__(self, cfg: LUAConfig) -> None:
        super().__init__()
        self.config = cfg
        dim = cfg.embed_dim
        self.conv_first = nn.Conv2d(cfg.in_chans, dim, 3, 1, 1)
        self.patch_embed = PatchEmbedNorm(dim, cfg.patch_norm)
        n_blocks = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(
            RSTB(cfg, d, h, rates[s : s + d]) for d, h, s in zip(cfg.depths, cfg.num_heads, starts)
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, 1, 1)
        self.heads = nn.ModuleDict(
            {f"x{s}": PixelShuffleHead(dim, cfg.head_num_feat, cfg.out_chans, s) for s in cfg.scales}
        )
        self._size_cache: dict[tuple, SizeContext] = {}
        self.apply(_init_weights)
        if cfg.input_skip == "bicubic":
            for head in self.heads.values():  # start as exact bicubic; training learns the residual
                nn.init.zeros_(head.conv_last.weight)
                nn.init.zeros_(head.conv_last.bias)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() must not leave cached index tensors and masks behind on the old device
        self._size_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def size_context(self, height: int, width: int, device: torch.device) -> SizeContext:
        """Token orders and shift mask for a padded size, computed once per (size, device) and cached."""
        key = (height, width, str(device))
        ctx = self._size_cache.get(key)
        if ctx is None:
            if len(self._size_cache) >= 16:  # bounded: tiling and odd sizes produce a few distinct shapes
                self._size_cache.clear()
            ctx = self._size_cache[key] = SizeContext.build(height, width, self.config.window_size, device)
        return ctx

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: [B, C_in, H, W] -> features [B, D, H, W] (channels-last memory)."""
        b, _, h, w = x.shape
        if h % self.config.window_size or w % self.config.window_size:
            raise ValueError(f"input {h}x{w} is not padded to a multiple of the window {self.config.window_size}")
        ctx = self.size_context(h, w, x.device)
        first = self.conv_first(x).permute(0, 2, 3, 1).reshape(b, h * w, -1)
        y = self.patch_embed.norm(first)
        for layer in self.layers:
            y = layer(y, ctx)
        y = self.norm(y)
        d = y.shape[-1]
        out = self.conv_after_body(y.view(b, h, w, d).permute(0, 3, 1, 2))
        return out + first.view(b, h, w, d).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """Run the trunk and the head for `scale` (2 or 4 in the official weights)."""
        head = self.heads[f"x{scale}"]
        x = x.contiguous(memory_format=torch.channels_last)
        out = head(self.forward_features(x))
        if self.config.input_skip == "bicubic":
            out = out + F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
