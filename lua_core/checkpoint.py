"""Reading, detecting, converting and writing LUA checkpoints.

Two containers are understood:
- the official BasicSR-style `.pth` pickle (`{"params_ema": sd}`, else `{"params": sd}`, else
  a bare state dict), read only with `torch.load(weights_only=True)`;
- our `.safetensors` files, whose metadata rebuilds the model without guessing
  (see docs/checkpoint-format.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .arch.reencode_residual import ReencodeResidual, ReencodeResidualConfig
from .arch.swinir_multihead import FLUX_OFFICIAL_CONFIG, LUAConfig, SwinIRMultiHead, shift_window_mask
from .errors import CheckpointError, UnknownConfigKeys
from .families import FAMILIES, LatentFamily, describe_channels, families_with_channels, get_family
from .fileio import atomic_write, names_look_like_lua

log = logging.getLogger(__name__)

FORMAT_NAME = "lua-latent-upscaler"
FORMAT_VERSION = 2  # the newest this code reads: 1 = SwinIRMultiHead, 2 = ReencodeResidual (prior inside)
ARCHS = {net.ARCH: net for net in (SwinIRMultiHead, ReencodeResidual)}
ARCH_NAME = SwinIRMultiHead.ARCH


@dataclass
class ModelInfo:
    """What a checkpoint says about itself (or what was inferred when it says nothing)."""

    config: LUAConfig | ReencodeResidualConfig
    family: LatentFamily | None
    provenance: dict = field(default_factory=dict)
    source_format: str = "safetensors"
    inferred: bool = False
    prior: dict | None = None  # v2: what the frozen prior is ({"kind", "autoencoder", "resize", ...})

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def arch(self) -> str:
        return ReencodeResidual.ARCH if isinstance(self.config, ReencodeResidualConfig) else SwinIRMultiHead.ARCH

    @property
    def channels(self) -> int:
        return self.config.channels if isinstance(self.config, ReencodeResidualConfig) else self.config.in_chans

    def title(self) -> str:
        """How users know it: 'LUA SDXL x2/x4 (v2: taesdxl re-encode prior + residual)'."""
        fam = self.family.label if self.family else f"unknown {self.channels}-channel family"
        kind = f"v2: {self.prior['autoencoder']} re-encode prior + residual" if self.prior else "v1"
        return f"LUA {fam} {'/'.join(f'x{s}' for s in self.scales)} ({kind})"

    def describe(self) -> str:
        """One paragraph for `python -m lua_core info` and logs."""
        cfg = self.config
        origin = "inferred from tensor shapes" if self.inferred else "from file metadata"
        if isinstance(cfg, ReencodeResidualConfig):
            shape = (
                f"residual width {cfg.width}, {cfg.blocks} blocks, inputs {cfg.inputs}; prior: "
                f"{self.prior['autoencoder']} decode -> {cfg.resize} -> encode"
                + (
                    f" (x{', x'.join(map(str, cfg.upscaler_scales))}: bicubic + a learned pixel residual, width "
                    f"{cfg.upscaler_width}, depth {cfg.upscaler_depth}"
                    + _highpass_words(cfg)
                    + ")"
                    if cfg.upscaler_scales
                    else ""
                )
                + (f" -> {cfg.refine_steps} back-projection step(s) at rate {cfg.refine_rate}" if cfg.refine_steps else "")
                + "".join(f" (x{sc}: {k} step(s) at rate {r})" for sc, k, r in cfg.refine_by_scale)
                + " (frozen, stored in the file)"
                + "".join(
                    f"; x{sc} matched to the decoder where smooth ({k} steps of {lr:g}, sigma {sg:g})"
                    for sc, k, sg, lr in cfg.match_by_scale
                )
            )
        else:
            shape = f"width {cfg.embed_dim}, depths {list(cfg.depths)}, window {cfg.window_size}"
        fam = self.family.label if self.family else "unknown family"
        return (
            f"{self.title()} [{self.arch}, {self.source_format}, config {origin}]: {fam} latents, "
            f"{self.channels} channels, scales {', '.join(f'x{s}' for s in self.scales)}, "
            f"{shape}, {_count_params(cfg) / 1e6:.2f} M parameters"
        )


def _highpass_words(cfg: ReencodeResidualConfig) -> str:
    """', low frequencies out at sigma 4' for the upscalers' high-pass (per head where they differ); '' when none."""
    sigmas = {s: cfg.highpass_for(s) for s in cfg.upscaler_scales}
    if not cfg.upscaler_highpass_by_scale:
        return f", low frequencies out at sigma {cfg.upscaler_highpass:g}" if cfg.upscaler_highpass else ""
    return ", low frequencies out at " + ", ".join(
        f"sigma {sg:g} in x{s}" if sg else f"none in x{s}" for s, sg in sigmas.items()
    )


def _count_params(cfg: LUAConfig | ReencodeResidualConfig) -> int:
    with torch.device("meta"):
        net = ReencodeResidual(cfg) if isinstance(cfg, ReencodeResidualConfig) else SwinIRMultiHead(cfg)
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- raw reading


def _sniff(path: Path) -> str:
    """Container kind from the first bytes: 'safetensors', 'zip-pickle', 'pickle' or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip-pickle"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and string metadata from any supported container, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes): the download or copy did not finish; fetch it again")
    kind = _sniff(path)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path.name} is a truncated or corrupt safetensors file ({size} bytes; {e}); download it again"
            ) from e
        return sd, meta
    if kind in ("zip-pickle", "pickle"):
        return _read_pickle(path, kind, size), {}
    raise CheckpointError(
        f"{path.name} is neither a safetensors file nor a PyTorch checkpoint (first bytes {_first_bytes(path)!r}); "
        "pick a LUA .safetensors or .pth file"
    )


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _read_pickle(path: Path, kind: str, size: int) -> dict[str, torch.Tensor]:
    if kind == "zip-pickle" and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path.name} is a truncated PyTorch checkpoint ({size} bytes); download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # name what torch's weights-only check found, never its advice (weights_only=False, allowlisting)
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        detail = f"unsupported GLOBAL {found.group(1)}" if found else "a pickle instruction it does not allow"
        raise CheckpointError(
            f"pickle refused: {path.name} holds Python objects other than tensors and plain containers "
            f"(torch's weights-only check found {detail}), so it is refused on purpose and nothing in it was run. "
            "LUA checkpoints hold only tensors and never need that: use a LUA .safetensors file, or download "
            "this model again from where it was published"
        ) from None  # not chained: torch's text would reach the console's traceback
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path.name} is a truncated or corrupt PyTorch checkpoint ({size} bytes; {e})") from e
    return unwrap_state_dict(obj, path.name)


def unwrap_state_dict(obj: object, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """BasicSR container rule: `params_ema`, else `params`, else a dict whose values are all tensors."""
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            sd = {str(k): v for k, v in obj.items()}
            if all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
                sd = {k[len("module.") :]: v for k, v in sd.items()}
            return sd
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"{name}: expected a state dict (or one under 'params_ema' / 'params'), found a dict with keys {keys}"
        )
    raise CheckpointError(f"{name}: expected a dict of tensors, found {type(obj).__name__}")


# --------------------------------------------------------------------------- detection


def identify_foreign(sd: dict[str, torch.Tensor]) -> str | None:
    """Name what a non-LUA state dict looks like, or None when it looks like LUA."""
    keys = set(sd)

    def has(pattern: str) -> bool:
        rx = re.compile(pattern)
        return any(rx.search(k) for k in keys)

    if names_look_like_lua("\n".join(keys), whole_names=True):
        return None
    if (
        "conv_first.weight" in keys
        and has(r"^layers\.\d+\.residual_group\.")
        and ("conv_last.weight" in keys or has(r"^upsample\."))
    ):
        chans = sd["conv_first.weight"].shape[1]
        return f"a single-scale pixel-space SwinIR model ({chans}-channel input), not a LUA latent model"
    if has(r"(^|\.)(RRDB_trunk|body\.\d+\.rdb\d|rdb\d\.conv\d)") or has(r"^model\.\d+\.sub\."):
        return "a pixel-space ESRGAN/RRDB upscaler, not a LUA latent model"
    if has(r"^model\.diffusion_model\.") or has(r"^(input_blocks|double_blocks|joint_blocks)\."):
        return "a diffusion model checkpoint, not a LUA latent model"
    if has(r"^(first_stage_model\.)?(encoder|decoder)\.(conv_in|down|up|mid)") or has(r"^(encoder|decoder)\.layers\."):
        return "a VAE, not a LUA latent model"
    if has(r"^\d+\.conv\.\d+\.weight$"):
        return "a tiny autoencoder (TAESD) encoder or decoder; it belongs in models/vae_approx, not models/lua"
    if has(r"^(lora_|.*\.lora_(up|down|A|B)\.)"):
        return "a LoRA, not a LUA latent model"
    sample = ", ".join(sorted(keys)[:4])
    return f"an unrecognised model ({len(keys)} tensors, e.g. {sample})"


def infer_config(sd: dict[str, torch.Tensor]) -> LUAConfig:
    """Rebuild the config from tensor shapes (for files without our metadata, like lua_flux.pth)."""
    w = sd["conv_first.weight"]
    embed_dim, in_chans = int(w.shape[0]), int(w.shape[1])
    depths, heads = [], []
    i = 0
    while f"layers.{i}.conv.weight" in sd:
        j = 0
        while f"layers.{i}.residual_group.blocks.{j}.norm1.weight" in sd:
            j += 1
        depths.append(j)
        heads.append(int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1]))
        i += 1
    b0 = "layers.0.residual_group.blocks.0."
    table = int(sd[b0 + "attn.relative_position_bias_table"].shape[0])
    window = (int(round(table**0.5)) + 1) // 2
    hidden = int(sd[b0 + "mlp.fc1.weight"].shape[0])
    mask_key = "layers.0.residual_group.blocks.1.attn_mask"
    img_size = int(round(sd[mask_key].shape[0] ** 0.5)) * window if mask_key in sd else 2 * window
    scales = sorted(int(m.group(1)) for k in sd if (m := re.match(r"^heads\.x(\d+)\.conv_last\.weight$", k)))
    first_head = f"heads.x{scales[0]}."
    return LUAConfig(
        in_chans=in_chans,
        out_chans=int(sd[first_head + "conv_last.weight"].shape[0]),
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=window,
        mlp_ratio=hidden / embed_dim,
        img_size=img_size,
        head_num_feat=int(sd[first_head + "conv_before.0.weight"].shape[0]),
        scales=tuple(scales),
        qkv_bias=(b0 + "attn.qkv.bias") in sd,
        patch_norm="patch_embed.norm.weight" in sd,
    )


def is_official_flux(config: LUAConfig) -> bool:
    """True when a config is exactly the official LUA-FLUX release's (every shape of the network matches)."""
    return config == FLUX_OFFICIAL_CONFIG


def _default_family(config: LUAConfig) -> LatentFamily | None:
    # Without metadata only the official LUA-FLUX network is taken as FLUX.1; any other file stays unknown
    # (16 channels may be SD3 or FLUX.1, 4 channels SD1 or SDXL) until `convert --family` records it.
    return FAMILIES["flux1"] if is_official_flux(config) else None


# --------------------------------------------------------------------------- building


def build_network(
    sd: dict[str, torch.Tensor], meta: dict[str, str], name: str = "checkpoint"
) -> tuple[SwinIRMultiHead | ReencodeResidual, ModelInfo]:
    """Turn a state dict (+ our metadata, if any) into a strictly loaded network and its info."""
    if meta.get("lua.format") not in (None, FORMAT_NAME):
        raise CheckpointError(f"{name}: metadata says format {meta['lua.format']!r}, expected {FORMAT_NAME!r}")
    foreign = identify_foreign(sd)
    if foreign:
        raise CheckpointError(f"{name} looks like {foreign}. Pick a LUA model file (models/lua).")
    if "lua.config" in meta:
        version = int(meta.get("lua.format_version", "1")) if meta.get("lua.format_version", "1").isdigit() else 0
        if version < 1:
            raise CheckpointError(f"{name}: unreadable lua.format_version {meta['lua.format_version']!r}")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{name} uses LUA file format v{version}; this version of the pack reads up to v{FORMAT_VERSION}. "
                "Update the node pack."
            )
        arch = meta.get("lua.arch", ARCH_NAME)
        if arch not in ARCHS:
            raise CheckpointError(
                f"{name}: metadata names network {arch!r}; this version of the pack knows {', '.join(ARCHS)}. "
                "Update the node pack."
            )
        try:
            config_cls = ReencodeResidualConfig if arch == ReencodeResidual.ARCH else LUAConfig
            config_data = json.loads(meta["lua.config"])
            if not isinstance(config_data, dict):
                raise TypeError(f"lua.config is a JSON {type(config_data).__name__}, not an object")
            config = config_cls.from_dict(config_data)
            family = get_family(meta["lua.family"]) if meta.get("lua.family") else None
            provenance = json.loads(meta.get("lua.provenance", "{}"))
            prior = json.loads(meta["lua.prior"]) if arch == ReencodeResidual.ARCH else None
        except UnknownConfigKeys as e:  # settings a later version of the pack added (a new inference step): not damage
            raise CheckpointError(
                f"{name} uses settings this version of the pack does not know ({', '.join(e.keys)}); it was "
                "written by a newer version. Update the node pack."
            ) from e
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{name}: its LUA metadata is damaged ({e}); re-export or re-convert the file") from e
        info = ModelInfo(config, family, provenance, "safetensors", prior=prior)
    else:
        try:
            config = infer_config(sd)
        except (KeyError, IndexError, ValueError) as e:
            raise CheckpointError(f"{name}: looks like LUA but its shapes do not form a valid config ({e})") from e
        info = ModelInfo(config, _default_family(config), {}, "inferred", inferred=True)
    if info.family is not None and info.family.channels != info.channels:
        raise CheckpointError(
            f"{name}: metadata says {info.family.label} ({info.family.channels} channels) "
            f"but the network takes {info.channels} channels"
        )
    with torch.device("meta"):
        net = ARCHS[info.arch](config)
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        expected = set(net.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        detail = f"missing {missing[:5]}, unexpected {unexpected[:5]}" if missing or unexpected else str(e)[:400]
        raise CheckpointError(f"{name} does not match the LUA layout for its config: {detail}") from e
    if info.prior is not None:
        net.prior.requires_grad_(False)
        net.float()  # the prior is stored in its source precision (bf16/fp16) and computed in fp32 like tiny_ae
    else:
        _check_masks(net, name)
    return net.eval(), info


def _check_masks(net: SwinIRMultiHead, name: str) -> None:
    cfg = net.config
    ref = shift_window_mask(cfg.img_size, cfg.img_size, cfg.window_size, cfg.window_size // 2)
    for key, buf in net.named_buffers():
        if key.endswith("attn_mask") and buf is not None and not torch.equal(buf.float(), ref):
            log.warning("%s: stored %s differs from the SwinIR shift-mask rule; masks are recomputed", name, key)
            return


def config_metadata(info: ModelInfo) -> dict[str, str]:
    """Our safetensors metadata for a model (all values are strings, as safetensors requires)."""
    meta = {
        "lua.format": FORMAT_NAME,
        "lua.format_version": str(ARCHS[info.arch].FORMAT_VERSION),
        "lua.arch": info.arch,
        "lua.config": info.config.to_json(),
        "lua.channels": str(info.channels),
        "lua.scales": json.dumps(list(info.config.scales)),
        "lua.provenance": json.dumps(info.provenance, sort_keys=True),
    }
    if info.family is not None:
        meta["lua.family"] = info.family.name
    if info.prior is not None:
        meta["lua.prior"] = json.dumps(info.prior, sort_keys=True)
    return meta


def compact_dtype(v: torch.Tensor) -> torch.dtype:
    """bf16 or fp16 when that holds every value of `v` exactly (the tiny AEs ship in those), else v's dtype."""
    for dt in (torch.bfloat16, torch.float16):
        if v.dtype != dt and torch.equal(v.to(dt).to(v.dtype), v):
            return dt
    return v.dtype


def save_safetensors(
    net: SwinIRMultiHead | ReencodeResidual, info: ModelInfo, path: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """Write `net` in our safetensors format (buffers included so strict loading works anywhere).

    A v2 prior is stored losslessly in the smallest float type that holds it exactly (its source precision).
    """
    sd = {}
    for k, v in net.state_dict().items():
        v = v.detach().to("cpu")
        if k.startswith("prior.") and v.is_floating_point():
            v = v.to(compact_dtype(v))
        elif dtype is not None and v.is_floating_point() and not k.endswith("attn_mask"):
            v = v.to(dtype)
        sd[k] = v.contiguous().clone()
    # never leave a half-written model where the loader would list it
    atomic_write(path, lambda tmp: save_file(sd, tmp, metadata=config_metadata(info)))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    family: str | None = None,
    dtype: torch.dtype | None = None,
) -> ModelInfo:
    """Convert any readable LUA checkpoint (e.g. the official lua_flux.pth) to our safetensors format."""
    sd, meta = read_state_dict(src)
    net, info = build_network(sd, meta, Path(src).name)
    if family is not None:
        fam = get_family(family)
        if fam.channels != info.channels:
            raise CheckpointError(
                f"--family {fam.name} needs {fam.channels}-channel latents but this model takes "
                f"{describe_channels(info.channels)}; choose one of "
                f"{', '.join(f.name for f in families_with_channels(info.channels)) or 'none'}"
            )
        info.family = fam
    if info.family is None:
        options = ", ".join(f.name for f in families_with_channels(info.channels))
        raise CheckpointError(
            f"{Path(src).name} has no family metadata and is not the official LUA-FLUX network, so its "
            f"{describe_channels(info.channels)} are ambiguous; pass --family ({options})"
        )
    if info.inferred:
        official = info.family.name == "flux1" and is_official_flux(info.config)
        info.provenance = {
            "converted_from": Path(src).name,
            "source_sha256": sha256_file(src),
            **({"source": "vaskers5/LUA-FLUX (official)"} if official else {}),
        }
    info.source_format = "safetensors"
    info.inferred = False
    save_safetensors(net, info, dst, dtype)
    return info
