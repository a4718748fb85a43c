"""Training configuration: one dataclass, presets, a config file, and flags, merged in that order."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..arch.swinir_multihead import LUAConfig


def _opt(default: Any, help: str, **kw: Any) -> Any:
    # the help text lives beside the field, so --help and the dataclass cannot drift apart
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Flags, presets and config files all set these fields.

    Frozen: what a run derives while it trains (a stage schedule fitted to --fit-minutes) is the trainer's state,
    and a changed config is a new one (`dataclasses.replace`).
    """

    # data
    data: str = _opt("", "folder of training images (jpg/png/webp, searched recursively); empty: use the prepared --cache-dir")
    family: str = _opt("sdxl", "latent family: sd1, sdxl, sd3, flux1")
    vae_approx: str = _opt("", "folder holding the family's tiny autoencoder (<name>_encoder/_decoder files)")
    run_dir: str = _opt("runs/lua", "where state, logs, plots and the exported model go")
    cache_dir: str = _opt("", "latent cache folder (default: <run_dir>/cache); reused while images and settings match")
    tile: int = _opt(384, "HR tile size in pixels cached per sample (multiple of 32); crops are cut from tiles")
    crop: int = _opt(256, "HR crop size in pixels seen per step (multiple of 32, <= tile); LR crops are crop/2, crop/4")
    tile_density: float = _opt(1.0, "tiles per image per tile-sized area of the image (area-weighted sampling)")
    max_tiles_per_image: int = _opt(3, "cap on tiles taken from one large image")
    min_rescale: float = _opt(
        0.5, "large images are randomly downscaled by a factor in [min_rescale, 1] before tiling"
    )
    synthetic_tiles: int = _opt(96, "flat-colour and smooth-gradient tiles added to the training set (flat stays flat)")
    val_fraction: float = _opt(0.08, "fraction of images held out for validation (chosen by a hash of the file name)")
    max_val_crops: int = _opt(64, "validation crops (center crops of held-out images)")
    workers: int = _opt(0, "DataLoader worker processes (0 = read in the training process)")
    seed: int = _opt(0, "random seed (tiles, init, sampling order)")
    # model
    embed_dim: int = _opt(64, "trunk width")
    depths: tuple[int, ...] = _opt((4, 4, 4, 4), "Swin blocks per residual group, comma separated")
    num_heads: tuple[int, ...] = _opt((2, 2, 2, 2), "attention heads per group, comma separated")
    window_size: int = _opt(8, "attention window (latent pixels)")
    mlp_ratio: float = _opt(2.0, "MLP hidden width / trunk width")
    img_size: int = _opt(16, "training size recorded in the stored shift masks (a multiple of the window)")
    head_num_feat: int = _opt(64, "width of the pixel-shuffle heads")
    scales: tuple[int, ...] = _opt((2, 4), "heads to train, comma separated (trained jointly)")
    input_skip: str = _opt(
        "bicubic", "'bicubic': heads learn a residual over the bicubic-upsampled latent; 'none': as the official model"
    )
    drop_path: float = _opt(0.0, "stochastic depth rate")
    # optimisation
    batch_size: int = _opt(16, "crops per step per process")
    stage_steps: tuple[int, ...] = _opt(
        (1000, 300, 2400), "steps of stage I (latent), II (latent+pixel), III (pixel), comma separated"
    )
    lr: float = _opt(1e-3, "Adam learning rate at the start of each stage (the paper: 2e-4)")
    betas_latent: tuple[float, ...] = _opt((0.9, 0.995), "Adam betas in stages I and II")
    betas_pixel: tuple[float, ...] = _opt((0.9, 0.99), "Adam betas in stage III")
    lr_milestones: tuple[float, ...] = _opt(
        (0.5, 0.75, 0.9), "fractions of each stage where the learning rate is multiplied by lr_gamma"
    )
    lr_gamma: float = _opt(0.5, "step-decay factor")
    ema_decay: float = _opt(0.999, "EMA decay of the exported weights (warmed up over the first steps)")
    grad_clip: float = _opt(0.4, "global gradient-norm clip (0 = off)")
    single_head_fraction: float = _opt(0.1, "final fraction of each stage where one random head is trained per step")
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off), bf16, off")
    # loss weights (paper values, except the edge term: see w_edge)
    w_latent_l1: float = _opt(1.0, "stage I-II: L1 between predicted and HR latents")
    w_latent_fft: float = _opt(0.1, "stage I-II: L1 between latent FFT magnitudes")
    # Stage II/III pixel weights are calibrated, not the paper's: on raw SDXL latents the paper's 0.1 / 0.05 give
    # the decoded terms 0.5 % / 0.01 % of the gradient and its 5e-5 edge weight ~0 % (bench/results/loss-shares.json)
    w_down_l1: float = _opt(2.0, "stage II: L1 between x2-bicubic-downsampled decodes (paper 0.1; ~8 pct of the gradient)")
    w_hf_l1: float = _opt(20.0, "stage II: L1 between high-frequency residuals x - blur(x) of decodes (paper 0.05; ~4 pct)")
    w_pix_l1: float = _opt(10.0, "stage III: L1 between decoded prediction and HR pixels")
    w_pix_fft: float = _opt(2.5, "stage III: L1 between pixel FFT magnitudes (paper 1.0; ~3 pct of the gradient)")
    w_edge: float = _opt(10.0, "stage III: edge-aware frequency loss, 0 = off (paper 5e-5 for its unpublished formula; ~5 pct)")
    decode_crop: int = _opt(12, "latent side decoded for pixel losses (random crop of the output; 0 = whole output)")
    # runtime
    threads: int = _opt(0, "CPU threads for torch (0 = torch default)")
    log_every: int = _opt(50, "steps between JSONL log lines (each also logs every loss term's share of the gradient)")
    val_every: int = _opt(500, "steps between validations (and plots)")
    save_every: int = _opt(250, "steps between resumable state saves")
    stop_after: int = _opt(0, "stop (saving state) after this many steps in this invocation; 0 = run to the end")
    max_minutes: float = _opt(0.0, "stop (saving state) after this many wall-clock minutes; 0 = no limit")
    max_cpu_minutes: float = _opt(
        0.0, "stop (saving state) after this many minutes of this process's CPU time (equal-budget sweeps); 0 = off"
    )
    fit_minutes: float = _opt(
        0.0, "after 30 timed steps, rescale every stage so the curriculum ends within this many minutes "
        "(of CPU time when --max-cpu-minutes is set, else wall time); 0 = off"
    )
    export: str = _opt("", "path of the exported .safetensors (default: <run_dir>/lua-<family>.safetensors)")
    export_dtype: str = _opt("float32", "dtype of the exported weights: float32, float16 or bfloat16")
    note: str = _opt("", "free text stored in the exported model's provenance")
    init_from: str = _opt(
        "", "start from these LUA weights (.safetensors/.pth of the same config) instead of random init"
    )

    def __post_init__(self) -> None:
        # flags, JSON and TOML give '4,4', [4, 4] or (4, 4): store tuples of the field's element type.
        # object.__setattr__ because the instance is frozen; this normalises the value while it is being built.
        for name, kind in TUPLE_FIELDS.items():
            object.__setattr__(self, name, parse_tuple(getattr(self, name), kind))

    # ------------------------------------------------------------------ derived values

    def model_config(self, in_chans: int) -> LUAConfig:
        """The network config this run trains."""
        return LUAConfig(
            in_chans=in_chans,
            out_chans=in_chans,
            embed_dim=self.embed_dim,
            depths=self.depths,
            num_heads=self.num_heads,
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            img_size=self.img_size,
            head_num_feat=self.head_num_feat,
            scales=self.scales,
            input_skip=self.input_skip,
            drop_path_rate=self.drop_path,
        )

    @property
    def stages(self) -> tuple[int, ...]:
        """Steps of each of the three stages, as configured (a run may fit them to a time budget)."""
        if len(self.stage_steps) != 3 or any(s < 0 for s in self.stage_steps):
            raise ValueError(f"stage_steps must be three non-negative integers, got {self.stage_steps!r}")
        return self.stage_steps

    @property
    def total_steps(self) -> int:
        """Steps of the whole curriculum, as configured."""
        return sum(self.stages)

    def validate(self) -> None:
        """Fail early, before any data is touched, on settings that cannot work."""
        problems = []
        if not self.data and not self.cache_dir:
            problems.append("--data is required (or --cache-dir of a prepared cache)")
        for name in ("crop", "tile"):
            if getattr(self, name) % 32:
                problems.append(f"{name} {getattr(self, name)} must be a multiple of 32 (x4 LR latents are {name}/32)")
        if self.crop > self.tile:
            problems.append(f"crop {self.crop} must not exceed tile {self.tile}")
        if not 0 <= self.val_fraction < 1:
            problems.append("val_fraction must be in [0, 1)")
        if self.amp not in ("auto", "bf16", "off"):
            problems.append(f"amp must be auto, bf16 or off, not {self.amp!r} (fp16 would need loss scaling)")
        if self.export_dtype not in ("float32", "float16", "bfloat16"):
            problems.append(f"export_dtype must be float32, float16 or bfloat16, not {self.export_dtype!r}")
        if self.decode_crop and self.decode_crop * 8 > self.crop:
            problems.append(f"decode_crop {self.decode_crop} latent px exceeds the HR latent ({self.crop // 8})")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        try:
            _ = self.stages
            self.model_config(4)
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every setting (tuples stay tuples)."""
        return asdict(self)


TUPLE_FIELDS: dict[str, type] = {
    "depths": int,
    "num_heads": int,
    "scales": int,
    "stage_steps": int,
    "betas_latent": float,
    "betas_pixel": float,
    "lr_milestones": float,
}


def parse_tuple(value: str | Iterable[Any], kind: type) -> tuple:
    """'0.9,0.99' or [0.9, 0.99] -> (0.9, 0.99)."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else value
    return tuple(kind(v) for v in items if v != "")


PRESETS: dict[str, dict[str, Any]] = {
    # about an hour on 2 CPU cores; small enough for CPU-only ComfyUI users (~5 MB of weights)
    "cpu": {},
    # one family in <= 8 minutes on one H100/H200 (bench/gpu_kit.py --train): wider trunk, big batches, bf16,
    # warm caches built on the GPU from the compact image set of tools/prepare_gpu_data.py
    "gpu-sprint": {
        "amp": "bf16",
        "batch_size": 64,
        "embed_dim": 128,
        "depths": (6, 6, 6, 6),
        "num_heads": (4, 4, 4, 4),
        "head_num_feat": 96,
        "lr": 5e-4,
        "stage_steps": (800, 200, 3000),
        "decode_crop": 16,
        "tile": 384,
        "tile_density": 4.0,
        "max_tiles_per_image": 12,
        "workers": 6,
        "log_every": 50,
        "val_every": 1000,
        "save_every": 500,
        "fit_minutes": 5.5,
        "max_minutes": 6.5,
        "export_dtype": "float16",
    },
    # the paper's schedule and the official FLUX network (needs GPUs: ~34 h on 8)
    "paper": {
        "amp": "auto",
        "lr": 2e-4,
        "tile": 768,
        "crop": 512,
        "embed_dim": 360,
        "depths": (6, 6, 6, 6, 6, 6),
        "num_heads": (12, 12, 12, 12, 12, 12),
        "window_size": 16,
        "img_size": 32,
        "head_num_feat": 256,
        "stage_steps": (125000, 125000, 125000),
        "decode_crop": 0,
        "input_skip": "none",
        "max_tiles_per_image": 16,
        "workers": 8,
        "log_every": 100,
        "val_every": 5000,
        "save_every": 2000,
    },
}


DESCRIPTION = (
    "Train a LUA latent upscaler with the paper's three-stage curriculum. Settings are merged in order: "
    "--preset, then --config (JSON or TOML with TrainConfig field names), then explicit flags. "
    "Run plainly for one process, or under torchrun for DDP (NCCL on GPUs, gloo on CPU)."
)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser of the `train` flags (the CLI adds the same flags to its subcommand)."""
    p = argparse.ArgumentParser(prog="python -m lua_core train", description=DESCRIPTION)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `train` flags to `p`: one per TrainConfig field, plus preset/config/resume."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="starting point for every setting")
    p.add_argument("--config", default=None, help="JSON or TOML file of settings (field names as below, no dashes)")
    p.add_argument("--resume", action="store_true", help="continue exactly from <run_dir>/state.pt")
    p.add_argument("--export-only", action="store_true", help="only export the EMA weights of <run_dir>/state.pt")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str if f.name in TUPLE_FIELDS else type(getattr(defaults, f.name))  # tuples parsed by TrainConfig
        p.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=None,
            help=f"{f.metadata['help']} (default: {getattr(defaults, f.name)!r})",
        )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge preset, config file and explicit flags into one TrainConfig."""
    values = dict(PRESETS[args.preset])
    if args.config:
        path = Path(args.config)
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib  # Python 3.11+; use a JSON config on 3.10

            loaded = tomllib.loads(text)
        else:
            loaded = json.loads(text)
        unknown = sorted(set(loaded) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise ValueError(f"{path.name}: unknown settings {unknown}")
        values.update(loaded)
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)
