"""Training configuration: one dataclass, presets, a config file, and flags, merged in that order."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..arch.swinir_multihead import LUAConfig


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every knob of a training run. Flags, presets and config files all set these fields."""

    # data
    data: str = _opt("", "folder of training images (jpg/png/webp, searched recursively)")
    family: str = _opt("sdxl", "latent family: sd1, sdxl, sd3, flux1")
    vae_approx: str = _opt("", "folder holding the family's tiny autoencoder (<name>_encoder/_decoder files)")
    run_dir: str = _opt("runs/lua", "where state, logs, plots and the exported model go")
    cache_dir: str = _opt("", "latent cache folder (default: <run_dir>/cache); reused when data and settings match")
    crop: int = _opt(256, "HR crop size in pixels (multiple of 32); LR crops are crop/2 and crop/4")
    crop_density: float = _opt(1.0, "crops per image per crop-sized area of the image (area-weighted sampling)")
    max_crops_per_image: int = _opt(16, "cap on crops taken from one large image")
    min_rescale: float = _opt(
        0.5, "large images are randomly downscaled by a factor in [min_rescale, 1] before cropping"
    )
    val_fraction: float = _opt(0.08, "fraction of images held out for validation (chosen by a hash of the file name)")
    max_val_crops: int = _opt(64, "validation crops (center crops of held-out images)")
    seed: int = _opt(0, "random seed (data crops, init, sampling)")
    # model
    embed_dim: int = _opt(64, "trunk width")
    depths: str = _opt("4,4,4,4", "Swin blocks per residual group, comma separated")
    num_heads: str = _opt("2,2,2,2", "attention heads per group, comma separated")
    window_size: int = _opt(8, "attention window (latent pixels)")
    mlp_ratio: float = _opt(2.0, "MLP hidden width / trunk width")
    img_size: int = _opt(16, "training size recorded in the stored shift masks (a multiple of the window)")
    head_num_feat: int = _opt(64, "width of the pixel-shuffle heads")
    scales: str = _opt("2,4", "heads to train, comma separated (trained jointly)")
    input_skip: str = _opt(
        "bicubic", "'bicubic': heads learn a residual over the bicubic-upsampled latent; 'none': as the official model"
    )
    drop_path: float = _opt(0.0, "stochastic depth rate")
    # optimisation
    batch_size: int = _opt(16, "crops per step per process")
    stage_steps: str = _opt(
        "1000,300,2400", "steps of stage I (latent), II (latent+pixel), III (pixel), comma separated"
    )
    lr: float = _opt(1e-3, "Adam learning rate at the start of each stage (the paper: 2e-4)")
    betas_latent: str = _opt("0.9,0.995", "Adam betas in stages I and II")
    betas_pixel: str = _opt("0.9,0.99", "Adam betas in stage III")
    lr_milestones: str = _opt(
        "0.5,0.75,0.9", "fractions of each stage where the learning rate is multiplied by lr_gamma"
    )
    lr_gamma: float = _opt(0.5, "step-decay factor")
    ema_decay: float = _opt(0.999, "EMA decay of the exported weights (warmed up over the first steps)")
    grad_clip: float = _opt(0.4, "global gradient-norm clip (0 = off)")
    single_head_fraction: float = _opt(0.1, "final fraction of each stage where one random head is trained per step")
    amp: str = _opt("auto", "mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off), bf16, off")
    # loss weights (paper values)
    w_latent_l1: float = _opt(1.0, "stage I-II: L1 between predicted and HR latents")
    w_latent_fft: float = _opt(0.1, "stage I-II: L1 between latent FFT magnitudes")
    w_down_l1: float = _opt(0.1, "stage II: L1 between x2-bicubic-downsampled decodes")
    w_hf_l1: float = _opt(0.05, "stage II: L1 between high-frequency residuals x - blur(x) of decodes")
    w_pix_l1: float = _opt(10.0, "stage III: L1 between decoded prediction and HR pixels")
    w_pix_fft: float = _opt(1.0, "stage III: L1 between pixel FFT magnitudes")
    w_edge: float = _opt(5e-5, "stage III: edge-aware frequency loss")
    decode_crop: int = _opt(12, "latent side decoded for pixel losses (random crop of the output; 0 = whole output)")
    # runtime
    threads: int = _opt(0, "CPU threads for torch (0 = torch default)")
    log_every: int = _opt(20, "steps between JSONL log lines")
    val_every: int = _opt(500, "steps between validations (and plots)")
    save_every: int = _opt(250, "steps between resumable state saves")
    stop_after: int = _opt(0, "stop (saving state) after this many steps in this invocation; 0 = run to the end")
    max_minutes: float = _opt(0.0, "stop (saving state) after this many minutes; 0 = no limit")
    export: str = _opt("", "path of the exported .safetensors (default: <run_dir>/lua-<family>.safetensors)")
    note: str = _opt("", "free text stored in the exported model's provenance")
    init_from: str = _opt(
        "", "start from these LUA weights (.safetensors/.pth of the same config) instead of random init"
    )

    # ------------------------------------------------------------------ derived values

    def model_config(self, in_chans: int) -> LUAConfig:
        """The network config this run trains."""
        return LUAConfig(
            in_chans=in_chans,
            out_chans=in_chans,
            embed_dim=self.embed_dim,
            depths=_ints(self.depths),
            num_heads=_ints(self.num_heads),
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            img_size=self.img_size,
            head_num_feat=self.head_num_feat,
            scales=_ints(self.scales),
            input_skip=self.input_skip,
            drop_path_rate=self.drop_path,
        )

    @property
    def stages(self) -> list[int]:
        steps = _ints(self.stage_steps)
        if len(steps) != 3 or any(s < 0 for s in steps):
            raise ValueError(f"stage_steps must be three non-negative integers, got {self.stage_steps!r}")
        return list(steps)

    @property
    def total_steps(self) -> int:
        return sum(self.stages)

    def validate(self) -> None:
        """Fail early, before any data is touched, on settings that cannot work."""
        problems = []
        if not self.data:
            problems.append("--data is required")
        if self.crop % 32:
            problems.append(f"crop {self.crop} must be a multiple of 32 (x4 LR latents are crop/32)")
        if not 0 <= self.val_fraction < 1:
            problems.append("val_fraction must be in [0, 1)")
        if self.amp not in ("auto", "bf16", "off"):
            problems.append(f"amp must be auto, bf16 or off, not {self.amp!r} (fp16 would need loss scaling)")
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

    def to_dict(self) -> dict:
        return asdict(self)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in str(text).replace(" ", "").split(",") if t)


def floats(text: str) -> tuple[float, ...]:
    """Parse '0.9,0.99' -> (0.9, 0.99)."""
    return tuple(float(t) for t in str(text).replace(" ", "").split(",") if t)


PRESETS: dict[str, dict] = {
    # about an hour on 2 CPU cores; small enough for CPU-only ComfyUI users (<1 MB of weights)
    "cpu": {},
    # the paper's schedule and the official FLUX network (needs GPUs: ~34 h on 8)
    "paper": {
        "amp": "auto",
        "lr": 2e-4,
        "crop": 512,
        "embed_dim": 360,
        "depths": "6,6,6,6,6,6",
        "num_heads": "12,12,12,12,12,12",
        "window_size": 16,
        "img_size": 32,
        "head_num_feat": 256,
        "stage_steps": "125000,125000,125000",
        "decode_crop": 0,
        "input_skip": "none",
        "max_crops_per_image": 64,
        "log_every": 100,
        "val_every": 5000,
        "save_every": 2000,
    },
}


def build_parser() -> argparse.ArgumentParser:
    """`python -m lua_core train` flags: one per TrainConfig field, plus preset/config/resume."""
    p = argparse.ArgumentParser(
        prog="python -m lua_core train",
        description=(
            "Train a LUA latent upscaler with the paper's three-stage curriculum. Settings are merged in order: "
            "--preset, then --config (JSON or TOML with TrainConfig field names), then explicit flags. "
            "Run plainly for one process, or under torchrun for DDP (NCCL on GPUs, gloo on CPU)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="starting point for every setting")
    p.add_argument("--config", default=None, help="JSON or TOML file of settings (field names as below, no dashes)")
    p.add_argument("--resume", action="store_true", help="continue exactly from <run_dir>/state.pt")
    p.add_argument("--export-only", action="store_true", help="only export the EMA weights of <run_dir>/state.pt")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(getattr(defaults, f.name))
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
