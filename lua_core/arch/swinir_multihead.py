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

from ..errors import UnknownConfigKeys

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

    def to_json(self) -> str:
        """JSON text of this config (as stored in checkpoint metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> LUAConfig:
        """Build a config from a dict, refusing unknown keys."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UnknownConfigKeys(f"unknown LUA config keys {unknown}; known keys are {sorted(known)}", unknown)
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


def shift_mask_patterns(window: int, shift: int) -> torch.Tensor:
    """The four distinct shift masks [4, N, N], by pattern: 0 none, 1 right column, 2 bottom row, 3 corner.

    Only windows in the last window row or column of a shifted image hold wrapped-around
    regions, and their masks do not depend on the image size, so a 2x2-window image has them all.
    """
    return shift_window_mask(2 * window, 2 * window, window, shift)


@dataclass(eq=False)
class WindowLayout:
    """How one kind of block (plain or shifted) cuts padded images into windows.

    Windows are grouped by shift-mask pattern (see `shift_mask_patterns`), and a batch is
    ordered group by group with every image's windows of a group side by side, so attention
    runs once per group (at most four calls whatever the batch) with a broadcast
    [1, nH, N, N] mask instead of a materialised per-window one.
    """

    tokens_per_image: int
    groups: list[tuple[int, int]]  # (windows per image, mask pattern), in window order
    group_tokens: list[torch.Tensor]  # per group: flat row-major source index of its windows' tokens, one image
    _batched: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def windows(self) -> int:
        """Windows per image."""
        return sum(count for count, _ in self.groups)

    def batch_groups(self, batch: int) -> list[tuple[int, int]]:
        """(windows, mask pattern) of each group for a batch of `batch` images, in `batch_order` order."""
        return [(count * batch, pattern) for count, pattern in self.groups]

    def batch_order(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather index into `[batch*H*W]` tokens that puts them in window order, and its inverse (cached)."""
        hit = self._batched.get(batch)
        if hit is None:
            if len(self._batched) >= 8:  # bounded: a few batch chunk sizes per run
                self._batched.clear()
            first = self.group_tokens[0]
            offsets = torch.arange(batch, device=first.device) * self.tokens_per_image
            order = torch.cat([(offsets[:, None] + idx[None, :]).flatten() for idx in self.group_tokens])
            hit = self._batched[batch] = (order, torch.argsort(order))
        return hit

    @classmethod
    def build(cls, height: int, width: int, window: int, shift: int, device: torch.device) -> WindowLayout:
        order = window_order(height, width, window, shift)  # [nW, N], row-major windows
        rows, cols = height // window, width // window
        pattern = torch.zeros(rows * cols, dtype=torch.long)
        if shift:
            last_col = (torch.arange(cols) == cols - 1).long().repeat(rows)
            last_row = (torch.arange(rows) == rows - 1).long().repeat_interleave(cols)
            pattern = last_col + 2 * last_row
        groups, tokens = [], []
        for p in range(4):
            chosen = pattern == p
            if chosen.any():
                groups.append((int(chosen.sum()), p))
                tokens.append(order[chosen].flatten().to(device))
        return cls(height * width, groups, tokens)


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


# SDPA's fused CUDA kernels (memory-efficient, cuDNN) need the head dim to be a multiple of 8
# (4 in fp32); the official 360/12 = 30 would fall back to the unfused math path. Zero-padding
# q, k and v changes no dot product, so pad on those devices and pass the true scale.
HEAD_DIM_MULTIPLE = {"cuda": 8}


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, shift: int = 0) -> None:
        super().__init__()
        self.dim, self.window, self.num_heads, self.shift = dim, window, num_heads, shift
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._mask_cache: tuple[tuple, torch.Tensor] | None = None
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _apply(self, fn, *args, **kwargs):
        self._mask_cache = None  # never keep masks on a device the weights left (ComfyUI offloads models)
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._mask_cache = None  # new weights, new bias
        return super()._load_from_state_dict(*args, **kwargs)

    def position_bias(self) -> torch.Tensor:
        """[nH, N, N] bias gathered from the table."""
        n = self.window * self.window
        table = self.relative_position_bias_table
        return table.t().index_select(1, self.relative_position_index.view(-1)).view(-1, n, n)

    def attention_masks(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive masks [P, nH, N, N]: position bias plus each shift pattern (P = 4 when shifted, else 1).

        Without autograd they are cached, keyed on the bias table's storage and version counter
        (host-side, no device sync), so load_state_dict, optimizer steps and .to() show at once.
        """
        table = self.relative_position_bias_table
        cache = not torch.is_grad_enabled() and not _compiling()
        if cache:
            # inference tensors (weights loaded under torch.inference_mode, as ComfyUI does) have no
            # version counter; load_state_dict and .to() clear the cache for them
            version = -1 if table.is_inference() else table._version
            key = (dtype, device, table.data_ptr(), version)
            if self._mask_cache is not None and self._mask_cache[0] == key:
                return self._mask_cache[1]
        masks = self.position_bias().to(device=device, dtype=dtype).unsqueeze(0)
        if self.shift:
            masks = masks + shift_mask_patterns(self.window, self.shift).to(device=device, dtype=dtype).unsqueeze(1)
        if cache:
            self._mask_cache = (key, masks)
        return masks

    def forward(self, windows: torch.Tensor, groups: list[tuple[int, int]]) -> torch.Tensor:
        """windows [B*nW, N, C] in `WindowLayout.batch_order`; groups = `WindowLayout.batch_groups`."""
        bnw, n, c = windows.shape
        qkv = self.qkv(windows).view(bnw, n, 3, self.num_heads, self.head_dim)
        pad = -self.head_dim % HEAD_DIM_MULTIPLE.get(windows.device.type, 1)
        if pad:
            qkv = F.pad(qkv, (0, pad))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        masks = self.attention_masks(q.dtype, q.device)
        parts, start = [], 0
        for count, pattern in groups:
            j = slice(start, start + count)
            mask = masks[pattern : pattern + 1]  # [1, nH, N, N], broadcast over the group's windows
            parts.append(F.scaled_dot_product_attention(q[j], k[j], v[j], attn_mask=mask, scale=self.scale))
            start += count
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        if pad:
            out = out[..., : self.head_dim]
        out = out.transpose(1, 2).reshape(bnw, n, c)
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
        self.attn = WindowAttention(dim, cfg.window_size, num_heads, cfg.qkv_bias, shift)
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
        order, inverse = layout.batch_order(b)
        y = self.norm1(x).view(b * hw, c).index_select(0, order).view(-1, self.window * self.window, c)
        y = self.attn(y, layout.batch_groups(b)).view(b * hw, c).index_select(0, inverse).view(b, hw, c)
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

    ARCH = "swinir_multihead"
    FORMAT_VERSION = 1

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

    # what the engine asks every LUA network (tiling, memory, progress)
    @property
    def channels(self) -> int:
        """Latent channels in and out."""
        return self.config.in_chans

    @property
    def tile_align(self) -> int:
        """Tiles start on multiples of the window, so they cut the same windows as an untiled run."""
        return self.config.window_size

    @property
    def min_tile(self) -> int:
        """Four windows: the two-window overlap still leaves clean context."""
        return 4 * self.config.window_size

    @property
    def context(self) -> int:
        """Default tile overlap: two windows (one discarded as context, one blended)."""
        return 2 * self.config.window_size

    def progress_modules(self) -> list[nn.Module]:
        """Modules whose every forward call is one unit of progress (and a chance to cancel)."""
        return [block for layer in self.layers for block in layer.residual_group.blocks]

    def progress_calls(self, scale: int) -> int:
        """Forward calls of the progress modules in one pass of any head (each block runs once)."""
        return len(self.progress_modules())

    def max_auto_tile(self, device_type: str) -> int | None:
        """No cap beyond memory: a transformer block is a fraction of a second even on a CPU."""
        return None

    def activation_bytes(self, scale: int, elem: int) -> int:
        """Rough peak bytes per input latent pixel of one image (measured peaks stay below it)."""
        cfg = self.config
        trunk = cfg.embed_dim * (10 + 2 * cfg.mlp_ratio) * elem
        head = cfg.head_num_feat * (2 + 3 * scale * scale) * elem
        return int((trunk + head) * 1.5)

    def cache_bytes(self, elem: int) -> int:
        """Attention masks every block caches (position bias, plus four shift patterns in odd blocks)."""
        cfg = self.config
        n = cfg.window_size**2
        return sum((4 if j % 2 else 1) * h * n * n * elem for d, h in zip(cfg.depths, cfg.num_heads) for j in range(d))

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
