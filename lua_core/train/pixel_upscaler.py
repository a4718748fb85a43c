"""Train one head's pixel upscaler (arch/pixel_upscaler.py) inside the prior of a v2 file, in pixel space.

    python -m lua_core train-upscaler --model models/lua-sdxl-small.safetensors --scale 2 \
        --data ../shared/data/train ../shared/data/photos --run-dir runs/up-sdxl-x2 --minutes 12 \
        --export runs/up-sdxl-x2/model.safetensors

Pairs: random tiles of the training split (native resolution, each folder keeps its held-out split), the LR tile =
the antialiased-bicubic downsample (bench/quality.py's protocol), its input = the file's own tiny decoder of the
file's own tiny encoding of it, its target = the HR tile. Computed once per run (pairs.pt in the run folder).
Loss: squared error (what PSNR scores) inside a border the convs' padding reaches, of the upscaled crop
(`--loss-on upscaled`) or of what the prior passes on (`--loss-on round-trip`: the tiny autoencoder's round trip of
the upscaled crop, with the head's back-projection steps; slower, and it learns only what survives the re-encode,
so it fits a warm start: a file whose head already has an upscaler). Everything else in the file
stays bit for bit; the exported file resizes head `scale`'s prior with the trained upscaler (its residual head then
sees a better prior than it was trained on: tools/select_v2_heads.py chooses its gain again). `state.pt` makes a run
resumable (`--resume`); a resume exports into the `--model` it is given (a file of the run's family, e.g. one that
has since gained another head's upscaler); `--minutes`/`--steps` given set a new run length, left out the run keeps
its own (so a resume of a finished run only exports).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..arch.reencode_residual import PIXEL_FACTOR, ReencodePrior
from ..data_split import scan_images, split_images
from ..devices import training_device, training_hardware
from ..fileio import atomic_write
from ..imaging import bicubic_resize, load_rgb, synthetic_smooth_tile, to_tensor
from ..model import LUAModel, load_model, with_pixel_upscaler
from .flags import add_config_flags, config_from_flags
from .prior_tiles import StepSampler
from .state import read_state, state_path, write_state

LOSSES = ("upscaled", "round-trip")
# the round trip's convs reach this far past the upscaler's border: edge pixels the full image would not have
ROUND_TRIP_BORDER = 2 * PIXEL_FACTOR
DARKEST = 0.2  # the smallest factor --dark-fraction scales a tile by
PAIRS_VERSION = 2  # bump when the pairs change for the same settings (2: synthetic smooth tiles)
TILE_MARGIN = 8  # input pixels cut from each tile edge before cropping: where the tile's own decode differs most


@dataclass(frozen=True)
class UpscalerTrainConfig:
    """Every knob of a pixel-upscaler run (immutable; a resumed run reads it back from its state)."""

    model: str  # the v2 file whose head gets the upscaler
    scale: int
    data: tuple[str, ...]
    run_dir: str = "runs/upscaler"
    minutes: float = 12.0  # training time; the cosine schedule spans it
    steps: int = 0  # > 0: train this many steps instead (the schedule spans them): the same run on any machine
    width: int = 0  # 0: the file's upscalers' width (one shape per file), or 32 when it has none
    depth: int = 0  # 0: likewise (5)
    # sigma of the low frequencies taken out of the residual (arch/pixel_upscaler.py); -1: the file's (0 = none)
    highpass: float = -1.0
    tile: int = 96  # input (LR) pixels per cached tile side; the HR tile is tile * scale
    crop: int = 48  # input pixels per training crop side, cut from the tile's inside (its decode's edges differ)
    tiles_per_image: int = 2
    # flat colours and gradients among the pairs: without them the first x4 upscaler (SDXL, 2026-12-07) sharpened the
    # tiny decoder's grain on flat images into colour patches (12 of the 14 images of tests/test_flat_regions.py)
    synthetic_tiles: int = 128
    batch: int = 16
    lr: float = 1e-3
    # linear warm-up of the learning rate over these first steps: at full rate from step one, Adam's early steps
    # (each parameter moved by ~lr whatever its tiny gradient) killed the last body layer's ReLUs within 50 steps
    # (SDXL x2: 0 % alive, so the upscaler learnt only its tail's bias; FLUX.2 x2 the same), 2026-12-07
    warmup_steps: int = 200
    seed: int = 0
    val_fraction: float = 0.08
    save_every: int = 500
    device: str = "auto"  # auto = cuda when available, else cpu (the pairs are built there too)
    threads: int = 0  # CPU threads (0: torch's default)
    loss_on: str = "upscaled"  # or "round-trip": the tiny autoencoder's round trip of the upscaled crop
    # share of the image tiles darkened (times a random factor in [DARKEST, 1)) before their pair is made: FLUX.1's
    # x4 upscalers took a dark bokeh render from 40.1 to 35.1 dB, the same render 0.3 brighter gained 0.4 dB
    dark_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.crop + 2 * TILE_MARGIN > self.tile:
            raise ValueError(f"--crop {self.crop} leaves no room in --tile {self.tile} (edges of {TILE_MARGIN} px)")
        if self.highpass < 0 and self.highpass != -1:
            raise ValueError(f"--highpass {self.highpass}: expected a sigma >= 0 (0: none), or -1 to keep the head's")
        if self.steps < 0:
            raise ValueError(f"--steps {self.steps}: expected a step count, or 0 to train for --minutes")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps {self.warmup_steps}: expected a step count (0: none)")
        if not 0 <= self.dark_fraction <= 1:
            raise ValueError(f"--dark-fraction {self.dark_fraction}: expected a share between 0 and 1")
        if self.loss_on not in LOSSES:
            raise ValueError(f"--loss-on {self.loss_on!r}: expected one of {', '.join(LOSSES)}")
        if self.loss_on == "round-trip" and self.crop * self.scale % PIXEL_FACTOR:
            raise ValueError(
                f"--loss-on round-trip encodes the upscaled crop: --crop {self.crop} x{self.scale} must be a multiple "
                f"of {PIXEL_FACTOR} pixels"
            )


def training_pairs(model: LUAModel, cfg: UpscalerTrainConfig, say=print) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoded LR tiles [N, 3, t, t], HR tiles [N, 3, t*s, t*s]) as fp16, from every training-split image."""
    rng = np.random.default_rng(cfg.seed)
    prior = model.net.prior
    side = cfg.tile * cfg.scale
    tiles = []
    for folder in cfg.data:
        root = Path(folder)
        train, _ = split_images(scan_images(root, side).usable, root, cfg.val_fraction)
        for path in train:
            img = to_tensor(load_rgb(path))
            h, w = img.shape[-2:]
            for _ in range(cfg.tiles_per_image):
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                tiles.append(img[..., y : y + side, x : x + side])
        say(f"{folder}: {len(train)} training images")
    if cfg.dark_fraction:  # its own generator: the tiles themselves are those of a run without it
        dark = np.random.default_rng([cfg.seed, 1])
        tiles = [t * dark.uniform(DARKEST, 1) if dark.random() < cfg.dark_fraction else t for t in tiles]
    tiles += [synthetic_smooth_tile(side, rng) for _ in range(cfg.synthetic_tiles)]
    lows = []
    device = next(prior.parameters()).device
    with torch.no_grad():
        for hr in tiles:
            lr = bicubic_resize(hr.to(device), (cfg.tile, cfg.tile)).clamp(0, 1)
            lows.append(prior.decode(prior.encoder(lr)).half().cpu())
    return torch.cat(lows), torch.cat(tiles).half()


class PairCrops(Dataset):
    """Random aligned crops of the cached pairs with a random flip and quarter turn: item i is pair i % n, its crop
    drawn from i (a StepSampler's growing ids give a fresh crop each time, the same ones after a resume)."""

    def __init__(self, lows: torch.Tensor, highs: torch.Tensor, cfg: UpscalerTrainConfig) -> None:
        self.lows, self.highs, self.cfg = lows, highs, cfg

    def __len__(self) -> int:
        return len(self.lows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, s = self.cfg, self.cfg.scale
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        i = i % len(self)
        y, x = torch.randint(TILE_MARGIN, cfg.tile - TILE_MARGIN - cfg.crop + 1, (2,), generator=g).tolist()
        low = self.lows[i, :, y : y + cfg.crop, x : x + cfg.crop].float()
        high = self.highs[i, :, y * s : (y + cfg.crop) * s, x * s : (x + cfg.crop) * s].float()
        turns, flip = int(torch.randint(0, 4, (1,), generator=g)), bool(torch.rand((), generator=g) < 0.5)
        low, high = torch.rot90(low, turns, (-2, -1)), torch.rot90(high, turns, (-2, -1))
        return (low.flip(-1), high.flip(-1)) if flip else (low, high)


def pixel_mse(upscaler: torch.nn.Module, low: torch.Tensor, high: torch.Tensor, border: int) -> torch.Tensor:
    """Squared error of the upscaled crop against HR, `border` output pixels in from each edge."""
    err = upscaler(low) - high
    return err[..., border:-border, border:-border].square().mean()


def round_trip_mse(
    prior: ReencodePrior, scale: int, refine: tuple[int, float], low: torch.Tensor, high: torch.Tensor, border: int
) -> torch.Tensor:
    """Squared error against HR of what the prior passes on for head `scale`: decode(encode(upscaled crop)), after
    `refine` back-projection steps, `border` output pixels in from each edge."""
    latent, _ = prior(prior.upscale(low, scale), refine)
    err = prior.decode(latent) - high
    return err[..., border:-border, border:-border].square().mean()


class UpscalerTrainer:
    """A thin loop: pairs (built once) -> crops -> squared error -> Adam with a cosine over the time budget."""

    def __init__(self, cfg: UpscalerTrainConfig, say=print) -> None:
        self.cfg, self.say = cfg, say
        self.device = training_device(cfg.device)  # before anything is written: a wrong --device leaves no run folder
        self.run_dir = Path(cfg.run_dir)
        self.state_path = state_path(self.run_dir)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        base = load_model(cfg.model)
        # a run folder holds one family's pairs and weights: another family's file is refused before anything is
        # written, and before the file is asked to take the upscaler (whose own refusals would hide the cause);
        # states before 2026-12-07 did not say their family
        trained_on = read_state(self.state_path).get("family") if self.state_path.is_file() else None
        if trained_on not in (None, base.family.name):
            raise ValueError(
                f"{self.run_dir} trained an upscaler of {trained_on} decodes; --model {cfg.model} is a "
                f"{base.family.name} file: pass a {trained_on} file or start a new --run-dir"
            )
        highpass = None if cfg.highpass < 0 else cfg.highpass
        self.model = with_pixel_upscaler(base, cfg.scale, cfg.width or None, cfg.depth or None, highpass)
        # the convs' (replicate) padding reaches depth + 2 input pixels in from a crop edge
        self.border = (self.model.config.upscaler_depth + 2) * cfg.scale
        if cfg.loss_on == "round-trip":
            self.border += ROUND_TRIP_BORDER
        if 2 * self.border >= cfg.crop * cfg.scale:  # else the loss is an empty mean (NaN) and nothing trains
            raise ValueError(
                f"--crop {cfg.crop} x{cfg.scale} is {cfg.crop * cfg.scale} output pixels, but the loss leaves out "
                f"{self.border} from each edge (depth {self.model.config.upscaler_depth} + 2, times the scale"
                f"{', plus the round trip' if cfg.loss_on == 'round-trip' else ''}): nothing would be left to train "
                f"on: use --crop {2 * self.border // cfg.scale + 8} or so, and a --tile {2 * TILE_MARGIN} above it"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)  # after the file accepted this upscaler: a refusal leaves no folder
        self.model.net.prior.to(self.device)  # the pairs' tiny decodes run there too; the rest of the file stays
        self.upscaler = self.model.net.prior.upscalers[f"x{cfg.scale}"]
        self.upscaler.requires_grad_(True).train()
        pairs = self.run_dir / "pairs.pt"
        settings = [PAIRS_VERSION, Path(cfg.model).name, cfg.scale, cfg.tile, cfg.tiles_per_image, cfg.synthetic_tiles]
        # the darkening only when used, so earlier runs' pairs keep their key
        key = json.dumps([*settings, cfg.seed, *([cfg.dark_fraction] if cfg.dark_fraction else [])])
        cached = torch.load(pairs, weights_only=True) if pairs.is_file() else None
        if cached is not None and cached["key"] == key:
            self.lows, self.highs = cached["lows"], cached["highs"]
        else:
            self.lows, self.highs = training_pairs(self.model, cfg, say)
            atomic_write(pairs, lambda tmp: torch.save({"key": key, "lows": self.lows, "highs": self.highs}, tmp))
        say(f"{len(self.lows)} tile pairs, upscaler x{cfg.scale}: {sum(p.numel() for p in self.upscaler.parameters())} parameters")
        self.step, self.seconds = 0, 0.0
        self.highpass_since: int | None = None  # the step a resume changed the high-pass at (None: from the start)
        # what trained the steps, kept in the state: an export-only resume on another machine (or thread count)
        # must not name itself (None: no step trained yet, or a state from before 2026-12-07)
        self.hardware: str | None = None
        self.opt = torch.optim.Adam(self.upscaler.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda _: self.lr_factor())

    def lr_factor(self) -> float:
        """Linear warm-up over `warmup_steps`, then cosine decay over `steps`, or else over `minutes` of training."""
        done = self.step / self.cfg.steps if self.cfg.steps else self.seconds / (self.cfg.minutes * 60)
        warm = min(1.0, (self.step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    def done(self) -> bool:
        """Whether the run has trained its `steps`, or else its `minutes`."""
        return self.step >= self.cfg.steps if self.cfg.steps else self.seconds >= self.cfg.minutes * 60

    def save_state(self) -> None:
        """Write state.pt atomically (upscaler weights, optimiser, step, time, config)."""
        state = {
            "config": asdict(self.cfg),
            "step": self.step,
            "seconds": self.seconds,
            "upscaler": self.upscaler.state_dict(),
            "opt": self.opt.state_dict(),
            "highpass_since": self.highpass_since,
            "family": self.model.family.name,
            "hardware": self.hardware,
        }
        write_state(self.state_path, state)

    def load_state(self) -> None:
        """Continue where state.pt left off."""
        state = read_state(self.state_path)
        self.upscaler.load_state_dict(state["upscaler"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.highpass_since = state.get("highpass_since")
        self.hardware = state.get("hardware")
        if state["config"].get("highpass", -1.0) != self.cfg.highpass:  # the weights fit any high-pass
            self.highpass_since = self.step
        self.say(f"resumed at step {self.step} ({self.seconds / 60:.1f} min trained)")

    def loss(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The run's loss (--loss-on) on one batch of crops."""
        if self.cfg.loss_on == "round-trip":
            refine = self.model.config.refine_for(self.cfg.scale)
            return round_trip_mse(self.model.net.prior, self.cfg.scale, refine, low, high, self.border)
        return pixel_mse(self.upscaler, low, high, self.border)

    def run(self) -> None:
        """Train until `steps` (or `minutes` of training) in all; state saved every `save_every` steps and at the end."""
        cfg = self.cfg
        sampler = StepSampler(len(self.lows), self.step, cfg.batch, cfg.seed)
        batches = iter(DataLoader(PairCrops(self.lows, self.highs, cfg), batch_size=cfg.batch, sampler=sampler))
        if not self.done():
            self.hardware = training_hardware()  # the last machine that trained steps
        with open(self.run_dir / "log.jsonl", "a") as log:
            try:
                while not self.done():
                    t0 = time.time()
                    low, high = (t.to(self.device, non_blocking=True) for t in next(batches))
                    loss = self.loss(low, high)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    self.seconds += time.time() - t0
                    self.sched.step()
                    self.step += 1
                    log.write(json.dumps({"step": self.step, "loss": loss.item(), "minutes": round(self.seconds / 60, 2)}) + "\n")
                    if self.step % 100 == 0:
                        self.say(f"step {self.step} loss {loss.item():.5f} ({self.seconds / 60:.1f} min)")
                    if self.step % cfg.save_every == 0:
                        self.save_state()
            finally:
                self.save_state()

    def export(self, path: str | Path) -> LUAModel:
        """Write the file with the trained upscaler (frozen with the prior) and its provenance."""
        self.upscaler.requires_grad_(False).eval()
        self.model.net.prior.cpu()  # where a loaded file lives
        info = self.model.info
        record = {
            "trained_steps": self.step,
            "train_minutes": round(self.seconds / 60, 1),
            "data": [Path(d).name for d in self.cfg.data],
            "tile_pairs": len(self.lows),
            "synthetic_tiles": self.cfg.synthetic_tiles,
            **({"dark_fraction": self.cfg.dark_fraction} if self.cfg.dark_fraction else {}),
            **({"highpass": highpass} if (highpass := self.model.config.highpass_for(self.cfg.scale)) else {}),
            **({"highpass_since_step": self.highpass_since} if self.highpass_since is not None else {}),
            "batch": self.cfg.batch,
            "loss": "mse" if self.cfg.loss_on == "upscaled" else "mse after the tiny autoencoder's round trip",
            "hardware": self.hardware or training_hardware(),
            "date": time.strftime("%Y-%m-%d"),
        }
        upscalers = {**info.provenance.get("pixel_upscalers", {}), f"x{self.cfg.scale}": record}
        model = LUAModel(self.model.net, replace(info, provenance={**info.provenance, "pixel_upscalers": upscalers}))
        model.save(path)
        self.say(f"exported {path}")
        return model


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags and handler of `train-upscaler` (lua_core/cli.py `build_parser` names the subcommand)."""
    p.add_argument("--model", required=True, help="the v2 .safetensors file whose head gets the upscaler")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--data", nargs="+", required=True, help="image folders (each keeps its own held-out split)")
    add_config_flags(p, UpscalerTrainConfig, skip=("model", "scale", "data"))
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir (its config wins, except --model, --device, --threads, and --minutes/--steps "
        "or a --highpass given: the weights fit any high-pass, and the exported record says from which step it applied)",
    )
    p.add_argument("--export", default="", help="write the file with the trained upscaler here when the run stops")
    p.set_defaults(func=run_cli)


def run_config(args: argparse.Namespace) -> tuple[UpscalerTrainConfig, bool]:
    """The run's config from the flags, and whether it resumes (a resume: the saved config, but for what this call sets)."""
    # the machine's settings come from this call: a run may continue on another machine; so does --model (required):
    # a resume may put the upscaler into another file of the family (e.g. one that has since gained another head's).
    # --minutes/--steps given replace the run's length (both: steps > 0 overrides minutes); left out, the run keeps its own
    return config_from_flags(
        args,
        UpscalerTrainConfig,
        keep_on_resume=("model", "device", "threads"),
        if_given_on_resume=(("minutes", "steps"), ("highpass",)),
    )


def run_cli(args: argparse.Namespace) -> int:
    """`python -m lua_core train-upscaler`."""
    cfg, resuming = run_config(args)
    trainer = UpscalerTrainer(cfg)
    if resuming:
        trainer.load_state()
    trainer.run()
    if args.export:
        trainer.export(args.export)
    return 0
