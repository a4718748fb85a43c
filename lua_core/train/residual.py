"""Training a v2 model: only the residual learns; the re-encode prior is frozen and precomputed per tile.

    python -m lua_core train-v2 --family sdxl --data ../shared/data/train ../shared/data/photos \
        --vae-approx ../shared/vae_approx --run-dir runs/v2-sdxl --steps 1200 --export runs/v2-sdxl.safetensors

Each step trains one head (the scales take turns) on a batch of random crops: the residual network
sees the crop's latent, prior and decoded pixels; the loss is L1 (or, with --loss mse, the squared error PSNR
scores) between the tiny decoder's output of the prediction in a window of the crop and the HR pixels, with the
window's edge errors taken out (`pixel_loss`): the one term, so all of the gradient serves decoded quality. `state.pt` in the run folder makes every run
resumable (`--resume`); the exported file carries the EMA weights and its own tiny autoencoder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..arch.reencode_residual import PIXEL_FACTOR, ReencodeResidual
from ..devices import training_device, training_hardware
from ..families import get_family
from ..model import LUAModel, new_v2_model, new_v2_model_over_prior
from .flags import add_config_flags, config_from_flags
from .prior_tiles import StepSampler, TileCrops, TileSpec, build_tiles
from .state import read_state, state_path, write_state

PIXEL_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


@dataclass(frozen=True)
class ResidualTrainConfig:
    """Every knob of a v2 training run (immutable; a resumed run reads it back from its state)."""

    family: str
    data: tuple[str, ...]
    vae_approx: str = ""
    run_dir: str = "runs/v2"
    cache_dir: str = ""  # default: <run_dir>/cache
    scales: tuple[int, ...] = (2, 4)
    # heads whose own stem and head alone learn; empty = every head and the shared trunk. With --init-from the trunk
    # and the other heads keep that file's weights exactly, so a head shipped as the prior alone can learn a
    # residual without changing what the other heads compute
    train_heads: tuple[int, ...] = ()
    width: int = 64
    blocks: int = 8
    inputs: str = "latent+prior+pixels"
    refine_steps: int = 0  # back-projection steps of the prior (see arch/reencode_residual.py)
    refine_rate: float = 0.0
    # a v2 file whose prior (autoencoder and refinement) the new residual trains over: no --vae-approx and no
    # refine settings needed, and the result has exactly the shipped file's prior
    prior_from: str = ""
    tile: int = 192  # HR pixels per cached tile (a multiple of 8 * max scale)
    tiles_per_image: int = 1  # random tiles cut from each image
    native_fraction: float = 0.0  # share of large photos' tiles cut at native resolution (see TileSpec)
    images_per_folder: int = 100  # 0 = all
    synthetic_tiles: int = 16  # flat colours and gradients (flat must stay flat)
    val_fraction: float = 0.08
    crop: int = 96  # HR pixels of the decoded window whose border-trimmed part is scored (multiple of 8 * scale)
    border: int = 16  # HR pixels trimmed from each side of the decoded window before the pixel loss
    context: int = 4  # output latent pixels around the window on each side that f sees (divisible by the scales)
    decode_context: int = 4  # of those, the ones decoded with the window (<= context; see `pixel_loss`)
    # l1 or mse. L1 heads scored best on held-out images at a fraction of their strength (tools/select_v2_heads.py:
    # x4 gains of 1/4 everywhere): L1 learns the median of the details a crop could have, where PSNR rewards their
    # mean, which is what a squared error learns
    loss: str = "l1"
    batch: int = 8
    lr: float = 5e-4
    steps: int = 600  # length of the cosine schedule; 0 = the schedule spans `minutes` of training time instead
    minutes: float = 0.0  # stop once the run (all invocations together) has trained this long; 0 = until `steps`
    device: str = "auto"  # auto = cuda when available, else cpu
    init_from: str = ""  # a v2 .safetensors of the same family and shape: start from its residual (warm start)
    # bf16 autocast of the decoder pass. auto = on CUDA only: on a 2-core EPYC with avx512_bf16 (no AMX) a step
    # took 0.59 s in bf16 vs 0.40 s in fp32, and fp32 is what evaluation decodes with.
    amp: str = "auto"
    ema: float = 0.99
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 0
    save_every: int = 50

    def __post_init__(self) -> None:
        # refused here, before the minutes of tile encoding a run starts with
        step = math.lcm(*self.scales)  # every head cuts the same window: whole latent pixels at every scale
        if self.crop % (PIXEL_FACTOR * step) or self.crop <= 0:
            raise ValueError(
                f"--crop {self.crop} must be a positive multiple of {PIXEL_FACTOR * step} for scales {self.scales}: "
                f"use --crop {max(1, self.crop // (PIXEL_FACTOR * step)) * PIXEL_FACTOR * step}"
            )
        if self.context % step:
            raise ValueError(
                f"--context {self.context} must be a multiple of {step} for scales {self.scales}: "
                f"use --context {-(-self.context // step) * step}"
            )
        if any(s not in self.scales for s in self.train_heads):
            raise ValueError(f"--train-heads {self.train_heads} must be among --scales {self.scales}")
        if self.train_heads and not self.init_from:
            raise ValueError("--train-heads trains some heads over a trained trunk: give --init-from FILE")
        if self.loss not in PIXEL_LOSSES:
            raise ValueError(f"--loss {self.loss!r}: use one of {', '.join(PIXEL_LOSSES)}")
        if not 0 <= self.native_fraction <= 1:
            raise ValueError(f"--native-fraction {self.native_fraction} is a share of tiles: use 0..1")
        if not 0 <= self.decode_context <= self.context:
            raise ValueError(
                f"--decode-context {self.decode_context} must be between 0 and --context {self.context}: "
                f"use --decode-context 0..{self.context}"
            )

    def spec(self) -> TileSpec:
        """The part of the config that decides the tile cache."""
        return TileSpec(
            tuple(self.data),
            self.val_fraction,
            self.tile,
            self.images_per_folder,
            self.synthetic_tiles,
            self.seed,
            self.tiles_per_image,
            self.native_fraction,
        )


# provenance entries about the prior (its refinement, decoder matching and pixel upscalers per head), true of any
# residual over it
PRIOR_RECORDS = (
    "prior_refinement_by_head", "prior_refinement_why", "decoder_match_by_head", "decoder_match_why", "pixel_upscalers"
)  # fmt: skip


def pixel_loss(
    net: ReencodeResidual, batch: dict[str, torch.Tensor], scale: int, cfg: ResidualTrainConfig, amp
) -> torch.Tensor:
    """`cfg.loss` (L1 or MSE) between the decoded prediction and HR in the crop's central window, inside the border.

    A step cannot afford to decode whole images, so it decodes the window plus `decode_context` latent pixels of the
    crop's context around it: the decoder's zero padding then sits that far from the scored pixels, where a residual
    cannot learn to exploit it. Decoding the window alone (decode_context 0) left it 16 px away: on FLUX.1 training
    tiles residuals trained that way cut the window L1 by 15-48 % but the whole-tile L1 by 0.5-5 %
    (bench/results/window-decode-flux1*.json) and scored below their start on held-out images. When the batch carries
    the whole tile's decoded prior (`decode_priors`), the prediction is decoded as that plus what the residual changes
    in the region's decode: D(prior)[region] + D_region(out) - D_region(prior); an untrained model's loss is then
    exactly the whole-tile decode's (tests/test_v2.py)."""
    out = batch["prior"] + net.residual(batch["z"], batch["prior"], batch["pix"], scale, batch.get("error"))
    cut = cfg.context - cfg.decode_context  # output latent pixels of context not decoded, on each side

    def region(t: torch.Tensor) -> torch.Tensor:
        return t[..., cut : t.shape[-2] - cut, cut : t.shape[-1] - cut]

    with amp:
        decoded = net.prior.decoder(region(out)).float()
    px = cut * PIXEL_FACTOR
    h, w = decoded.shape[-2:]
    if "prior_pix" in batch:
        with torch.no_grad(), amp:
            edges = net.prior.decoder(region(batch["prior"])).float() - batch["prior_pix"][..., px : px + h, px : px + w]
        decoded = decoded - edges
    hr = batch["hr"][..., px : px + h, px : px + w]
    t = cfg.decode_context * PIXEL_FACTOR + cfg.border  # the window, inside its border
    return PIXEL_LOSSES[cfg.loss](decoded[..., t:-t, t:-t], hr[..., t:-t, t:-t])


def crop_latent(cfg: ResidualTrainConfig, scale: int) -> int:
    """Input latent pixels per training crop at `scale`: the decoded window plus context on both sides."""
    return (cfg.crop // PIXEL_FACTOR + 2 * cfg.context) // scale


class ResidualTrainer:
    """A thin loop over: tiles (built once) -> crops -> loss -> Adam + EMA; resumable from state.pt."""

    def __init__(self, cfg: ResidualTrainConfig, say=print) -> None:
        self.cfg, self.say = cfg, say
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if cfg.prior_from:
            if cfg.vae_approx or cfg.refine_steps:
                raise ValueError("--prior-from takes the autoencoder and its refinement from the file: drop "
                                 "--vae-approx / --refine-steps")
            self.model = new_v2_model_over_prior(cfg.prior_from, cfg.scales, cfg.width, cfg.blocks, cfg.inputs)
            if self.model.family.name != cfg.family:
                raise ValueError(
                    f"--prior-from {cfg.prior_from} is a {self.model.family.name} model, not {cfg.family}: give "
                    f"models/lua-{cfg.family}-small.safetensors or --family {self.model.family.name}"
                )
        else:
            self.model = new_v2_model(
                get_family(cfg.family),
                cfg.scales,
                cfg.width,
                cfg.blocks,
                cfg.inputs,
                cfg.vae_approx,
                refine=(cfg.refine_steps, cfg.refine_rate),
            )
        self.net: ReencodeResidual = self.model.net
        if cfg.init_from:
            self.warm_start(cfg.init_from)
        self.device = training_device(cfg.device)
        self.net.to(self.device)
        self.run_dir = Path(cfg.run_dir)
        self.state_path = state_path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.train_heads:
            learn = tuple(f"{part}.x{s}." for part in ("stems", "heads") for s in cfg.train_heads)
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith(learn))
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.step = 0
        self.seconds = 0.0
        if not cfg.steps and not cfg.minutes:
            raise ValueError("give --steps (schedule length) or --minutes (a time budget the schedule spans)")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.lr_factor)
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=False)
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
        tiles = build_tiles(cfg.spec(), self.net, Path(cfg.cache_dir or self.run_dir / "cache"), say, decoded_priors=True)
        self.n_tiles = tiles["hr"].shape[0]
        self.crops = {s: TileCrops(tiles, s, crop_latent(cfg, s), cfg.seed) for s in cfg.scales}

    @property
    def heads(self) -> tuple[int, ...]:
        """The heads that take turns in training."""
        return self.cfg.train_heads or self.cfg.scales

    def warm_start(self, path: str) -> None:
        """Copy the residual of a shipped v2 file (same family and shape; its prior may be refined differently;
        its inputs may be a shorter variant, e.g. no "+error": the stems' extra input channels then start at zero,
        so the warm-started model computes exactly what the file does)."""
        from ..model import load_model

        other = load_model(path)
        mine = self.net.config
        if (
            other.info.arch != ReencodeResidual.ARCH
            or not mine.inputs.startswith(other.config.inputs)
            or replace(
                other.config,
                refine_steps=mine.refine_steps,
                refine_rate=mine.refine_rate,
                refine_by_scale=mine.refine_by_scale,
                inputs=mine.inputs,
            )
            != mine
        ):
            raise ValueError(
                f"--init-from {path}: {other.info.title()} does not match this run's {self.model.info.title()}"
            )
        own = self.net.state_dict()
        residual = {k: v for k, v in other.net.state_dict().items() if not k.startswith("prior.")}
        for k, v in residual.items():
            if v.shape != own[k].shape:  # a stem of the shorter input variant: its inputs come first
                residual[k] = torch.cat([v, v.new_zeros(v.shape[0], own[k].shape[1] - v.shape[1], *v.shape[2:])], 1)
        self.net.load_state_dict(residual, strict=False)
        self.say(f"residual initialised from {path}")

    def warm_start_provenance(self) -> dict:
        """What a warm-started run continued from (the earlier file's own training record), for the model card."""
        if not self.cfg.init_from:
            return {}
        from ..model import load_model

        earlier = load_model(self.cfg.init_from).info.provenance or {}
        keep = ("trained_steps", "train_minutes", "tiles", "batch", "loss", "hardware", "date", "trained_heads", "continued_from")
        return {
            "continued_from": {"file": Path(self.cfg.init_from).name, **{k: earlier[k] for k in keep if k in earlier}}
        }

    def kept_provenance(self) -> dict:
        """What the earlier files' records say that stays true of this one: the prior's settings (--prior-from) and,
        with --train-heads, the gains and switched-off residuals of the heads this run left as they were."""
        from ..model import load_model

        out = {}
        if self.cfg.prior_from:
            earlier = load_model(self.cfg.prior_from).info.provenance or {}
            out.update({k: earlier[k] for k in PRIOR_RECORDS if k in earlier})
        if self.cfg.train_heads:
            trained = [f"x{s}" for s in self.cfg.train_heads]
            earlier = load_model(self.cfg.init_from).info.provenance or {}
            gains = {h: g for h, g in earlier.get("residual_gain", {}).items() if h not in trained}
            off = [h for h in earlier.get("residual_disabled", []) if h not in trained]
            out["trained_heads"] = trained
            retrained = [h for h in out.get("prior_refinement_by_head", {}) if h in trained]
            then = f"; then {' and '.join(retrained)} learned a residual over it (train-v2 --train-heads)"
            if retrained and not out["prior_refinement_why"].endswith(then):  # said once, however often a head retrains
                out["prior_refinement_why"] += then  # the setting was chosen for the prior alone; say what came after
            if gains:
                out.update(residual_gain=gains, residual_gain_why=earlier["residual_gain_why"])
            if off:
                out.update(residual_disabled=off, residual_disabled_why=earlier["residual_disabled_why"])
        return out

    def lr_factor(self, step: int) -> float:
        """Cosine decay over `steps`, or over `minutes` of training time when steps is 0 (time-budgeted runs)."""
        cfg = self.cfg
        done = min(step, cfg.steps) / cfg.steps if cfg.steps else min(1.0, self.seconds / (cfg.minutes * 60))
        return 0.5 * (1 + math.cos(math.pi * done))

    # ------------------------------------------------------------------ state

    def save_state(self) -> None:
        """Write state.pt atomically (residual weights, EMA, optimiser, schedule, step, config)."""
        state = {
            "config": asdict(self.cfg),
            "step": self.step,
            "seconds": self.seconds,
            "net": {k: v for k, v in self.net.state_dict().items() if not k.startswith("prior.")},
            "ema": {k: v for k, v in self.ema.module.state_dict().items() if not k.startswith("prior.")},
            "ema_n": self.ema.n_averaged,
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        }
        write_state(self.state_path, state)

    def load_state(self) -> None:
        """Continue exactly where state.pt left off."""
        state = read_state(self.state_path)
        self.net.load_state_dict(state["net"], strict=False)
        self.ema.module.load_state_dict(state["ema"], strict=False)
        self.ema.n_averaged.copy_(state["ema_n"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.say(f"resumed at step {self.step} ({self.seconds / 60:.1f} min trained)")

    # ------------------------------------------------------------------ loop

    def batches(self, scale: int):
        """Batches for one scale, from the step the run is at."""
        crops = self.crops[scale]
        sampler = StepSampler(self.n_tiles, self.step, self.cfg.batch, self.cfg.seed + scale)
        return iter(DataLoader(crops, batch_size=self.cfg.batch, sampler=sampler, num_workers=0))

    def train_step(self, streams: dict) -> dict:
        """One optimiser step on the head whose turn it is."""
        cfg = self.cfg
        scale = self.heads[self.step % len(self.heads)]
        batch = {k: v.to(self.device, non_blocking=True) for k, v in next(streams[scale]).items()}
        loss = pixel_loss(self.net, batch, scale, cfg, self.amp)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or float("inf"))
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.net)
        self.step += 1
        return {"step": self.step, "scale": scale, "loss": loss.item(), "grad_norm": gnorm.item()}

    def run(self, until_step: int | None = None) -> None:
        """Train until `steps` (or `until_step`) or `minutes` of training in all; state saved every `save_every` steps."""
        cfg = self.cfg
        last = min(cfg.steps or 1 << 62, until_step or 1 << 62)
        if self.step >= last or (cfg.minutes and self.seconds >= cfg.minutes * 60):
            return
        streams = {s: self.batches(s) for s in self.heads}
        log = open(self.run_dir / "log.jsonl", "a")
        try:
            while self.step < last:
                t0 = time.time()
                rec = self.train_step(streams)
                self.seconds += time.time() - t0
                rec["lr"] = self.sched.get_last_lr()[0]
                rec["minutes"] = round(self.seconds / 60, 2)
                log.write(json.dumps(rec) + "\n")
                if self.step % 10 == 0:
                    log.flush()
                    self.say(
                        f"step {self.step} x{rec['scale']} loss {rec['loss']:.4f} "
                        f"({self.seconds / 60:.1f} min, {self.seconds / self.step:.2f} s/step)"
                    )
                if self.step % cfg.save_every == 0:
                    self.save_state()
                if cfg.minutes and self.seconds >= cfg.minutes * 60:
                    break
        finally:
            log.close()
            self.save_state()

    def export(self, path: str | os.PathLike, note: str = "") -> LUAModel:
        """Write the EMA weights (with the prior) as a v2 .safetensors file."""
        model = LUAModel(self.ema.module.eval(), self.model.info, Path(path).stem)
        model.info.provenance = {
            "trained_steps": self.step,
            "train_minutes": round(self.seconds / 60, 1),
            "data": [Path(d).name for d in self.cfg.data],
            "tiles": self.n_tiles,
            "batch": self.cfg.batch,
            **({"loss": self.cfg.loss} if self.cfg.loss != "l1" else {}),  # files before the option were all L1
            "hardware": training_hardware(),
            "date": time.strftime("%Y-%m-%d"),
            **({"note": note} if note else {}),
            **({"prior_from": Path(self.cfg.prior_from).name} if self.cfg.prior_from else {}),
            **self.warm_start_provenance(),
            **self.kept_provenance(),
        }
        model.save(path)
        self.say(f"exported {path}")
        return model


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags and handler of `train-v2` (lua_core/cli.py `build_parser` names the subcommand)."""
    p.add_argument("--family", required=True)
    p.add_argument("--data", nargs="+", required=True, help="image folders (each keeps its own held-out split)")
    add_config_flags(p, ResidualTrainConfig, skip=("family", "data"))
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir (its config wins, except --minutes/--steps given)",
    )
    p.add_argument("--export", default="", help="write the trained model here when the run stops")
    p.add_argument("--note", default="")
    p.set_defaults(func=run_cli)


def run_config(args: argparse.Namespace) -> tuple[ResidualTrainConfig, bool]:
    """The run's config from the flags, and whether it resumes (a resume: the saved config, but for what this call sets)."""
    # --minutes and --steps given replace the run's own (each alone: a time stop over the saved schedule, or a new one)
    return config_from_flags(args, ResidualTrainConfig, keep_on_resume=(), if_given_on_resume=(("minutes",), ("steps",)))


def run_cli(args: argparse.Namespace) -> int:
    """`python -m lua_core train-v2`."""
    cfg, resuming = run_config(args)
    trainer = ResidualTrainer(cfg)
    if resuming:
        trainer.load_state()
    trainer.run()
    if args.export:
        trainer.export(args.export, args.note)
    return 0
