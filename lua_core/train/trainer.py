"""The v1 training loop: one Trainer owns the model, EMA, optimiser, data and the run folder, and steps through
the curriculum (train/schedule.py) with exact resume (train/state.py), validation and export; optional DDP via
torchrun (train/distributed.py)."""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.util
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..arch.swinir_multihead import SwinIRMultiHead
from ..baselines import resize_latent
from ..checkpoint import ModelInfo, save_safetensors
from ..engine import pad_to_multiple
from ..families import get_family
from ..imaging import bicubic_resize
from ..metrics import psnr
from ..tiny_ae import TinyAutoencoder, load_tiny_autoencoder
from . import losses
from .config import TrainConfig
from .data import LatentCrops, build_cache
from .distributed import ResumableSampler, init_distributed, state_checksum
from .optim import autocast_for, ema_average, gradient_shares
from .schedule import FIT_AFTER_STEPS, STAGE_NAMES, fit_stages, heads_at, lr_factor, stage_at
from .state import check_same_model, read_state, resumed_stages, state_path, stored_config, write_state


class MultiHead(nn.Module):
    """Runs each requested head on its own LR input; one module so DDP sees a single forward."""

    def __init__(self, net: SwinIRMultiHead) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The output of head `scale` for each `scale: LR latent` of `inputs`, cropped to scale x the input."""
        out = {}
        for scale, x in inputs.items():
            h, w = x.shape[-2:]
            out[scale] = self.net(pad_to_multiple(x, self.net.config.window_size), scale)[..., : h * scale, : w * scale]
        return out


class Trainer:
    """One run: owns the model, EMA, optimiser, data and the run folder."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, say: Callable[[str], None] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        # the schedule this run follows: the configured one until --fit-minutes rescales it (saved in state.pt)
        self.stages: tuple[int, ...] = cfg.stages
        self.dist = init_distributed()
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.run_dir = Path(cfg.run_dir)
        self.state_path = state_path(self.run_dir)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.family = get_family(cfg.family)
        device = self.dist.device
        self.ae: TinyAutoencoder = load_tiny_autoencoder(
            self.family, [cfg.vae_approx] if cfg.vae_approx else [], device
        )
        self.ae.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.net = SwinIRMultiHead(cfg.model_config(self.family.channels)).to(device)
        if cfg.init_from:
            self._init_from(cfg.init_from)
        self.ema = AveragedModel(self.net, avg_fn=ema_average(cfg.ema_decay), use_buffers=True)
        self.ema.eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=cfg.betas_latent, weight_decay=0.0)
        # reads self.stages at each step, so a refitted schedule moves the milestones with it
        self.sched = LambdaLR(self.opt, lambda step: lr_factor(step, self.stages, cfg.lr_milestones, cfg.lr_gamma))
        self.step = 0
        self.epoch, self.consumed = 0, 0  # data position: epoch and samples of it already trained on
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        if resume:
            self._load_state()
        self.model: nn.Module = MultiHead(self.net)
        if self.dist.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.single_head_fraction > 0,
                broadcast_buffers=False,  # the only buffers are constant index tables and masks
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.run_dir / "cache"
        if self.dist.main:
            self.index = build_cache(cfg, self.ae, cache_dir, self.say)
        if self.dist.world > 1:
            self.dist.barrier()  # the other ranks read the index rank 0 has just written
            self.index = json.loads((cache_dir / "index.json").read_text())
        self.train_set = LatentCrops(cache_dir, self.index["shards"]["train"], cfg.crop)
        val_shards = self.index["shards"]["val"]
        self.val_set = LatentCrops(cache_dir, val_shards, self.index["tile"]["val"]) if val_shards else None
        self.sampler = ResumableSampler(
            DistributedSampler(
                self.train_set, self.dist.world, self.dist.rank, shuffle=True, seed=cfg.seed, drop_last=True
            )
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,  # a new epoch re-reads the sampler's position
        )
        self._batches = self._batch_stream()
        self._stop = False
        self.log_path = self.run_dir / "log.jsonl"
        self.can_plot = importlib.util.find_spec("matplotlib") is not None
        if not self.can_plot and self.dist.main:
            self.say("matplotlib is not installed: training runs, but no PNG plots (pip install matplotlib)")

    # ------------------------------------------------------------------ state

    def _init_from(self, path: str) -> None:
        from ..model import load_model

        src = load_model(path)
        if src.config != self.net.config:
            raise ValueError(f"--init-from {path}: its config {src.config} differs from this run's {self.net.config}")
        self.net.load_state_dict(src.net.state_dict())
        self.say(f"initialised from {path}")

    def _load_state(self) -> None:
        if not self.state_path.is_file():
            raise FileNotFoundError(f"--resume: no {self.state_path}; start without --resume")
        state = read_state(self.state_path)
        check_same_model(stored_config(state), self.cfg, self.run_dir)
        self.stages = resumed_stages(state, self.cfg)
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step = int(state["step"])
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        gens = state["gen"] if isinstance(state["gen"], list) else [state["gen"]]
        if len(gens) == self.dist.world:
            self.gen.set_state(gens[self.dist.rank])
        else:  # a different number of processes: fresh, distinct per-rank streams (no longer bit-exact)
            self.gen.manual_seed(self.cfg.seed * 1000 + self.step * 7919 + self.dist.rank)
            self.say(f"resume with {self.dist.world} processes instead of {len(gens)}: data order reseeded")
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._truncate_log(self.step)
        self.say(f"resumed {self.run_dir} at step {self.step}")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the saved step (they will be written again), so plots do not double-count."""
        path = self.run_dir / "log.jsonl"
        if self.dist.main and path.is_file():
            lines = path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in kept))

    def save_state(self) -> None:
        """Atomically write everything needed to continue exactly (rank 0 writes; generators of all ranks kept)."""
        gens = self.dist.gather(self.gen.get_state())
        if not self.dist.main:
            return
        state = {
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "gen": gens if self.dist.world > 1 else gens[0],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": self.cfg.to_dict(),  # the settings as given (a plain dict, as in every earlier state file)
            "stages": list(self.stages),  # the schedule followed, fitted to --fit-minutes or not
        }
        write_state(self.state_path, state)

    # ------------------------------------------------------------------ one step

    def _decode_window(self, size: int) -> tuple[slice, slice, int]:
        """Random latent crop (shared by the batch) for pixel losses, and the pixel border to trim."""
        dc = self.cfg.decode_crop
        if not dc or dc >= size:
            return slice(None), slice(None), 0
        i, j = (int(v) for v in torch.randint(0, size - dc + 1, (2,), generator=self.gen))
        return slice(i, i + dc), slice(j, j + dc), 8

    def loss_terms(self, batch: dict[str, torch.Tensor], heads: list[int], stage: int) -> dict[str, torch.Tensor]:
        """All loss terms of one step for the active heads (summed over heads)."""
        cfg = self.cfg
        inputs = {s: batch[f"z_lr{s}"] for s in heads}
        with autocast_for(cfg, self.dist.device):
            preds = self.model(inputs)
        terms: dict[str, torch.Tensor] = {}

        def add(new: dict[str, torch.Tensor]) -> None:
            for k, v in new.items():
                terms[k] = terms.get(k, 0.0) + v

        size = batch["z_hr"].shape[-1]
        rows, cols, trim = self._decode_window(size) if stage > 0 else (None, None, 0)
        if stage == 1:  # stage II compares decodes: the HR latent's decode of the same crop is the target
            with torch.no_grad(), autocast_for(cfg, self.dist.device):
                dec_target = self.ae.decode(batch["z_hr"][..., rows, cols]).float()
        for s in heads:
            pred = preds[s].float()
            if stage < 2:
                add(losses.latent_terms(pred, batch["z_hr"], cfg.w_latent_l1, cfg.w_latent_fft))
            if stage == 0:
                continue
            with autocast_for(cfg, self.dist.device):
                dec = self.ae.decode(pred[..., rows, cols]).float()
            px = (slice(None), slice(None)) + tuple(
                slice(r.start * 8, r.stop * 8) if r.start is not None else slice(None) for r in (rows, cols)
            )
            target = dec_target if stage == 1 else batch["hr_px"][px]
            if trim:
                dec, target = dec[..., trim:-trim, trim:-trim], target[..., trim:-trim, trim:-trim]
            if stage == 1:
                add(losses.bridge_terms(dec, target, cfg.w_down_l1, cfg.w_hf_l1))
            else:
                add(losses.pixel_terms(dec, target, cfg.w_pix_l1, cfg.w_pix_fft, cfg.w_edge))
        return terms

    def _batch_stream(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in sampler order across epochs; `consumed` counts what was trained on (resume point)."""
        while True:
            self.sampler.set_position(self.epoch, self.consumed)
            for batch in self.loader:
                self.consumed += self.cfg.batch_size
                yield batch
            self.epoch, self.consumed = self.epoch + 1, 0

    def train_step(self, measure_shares: bool = False) -> dict[str, Any]:
        """One optimiser step; returns the logged numbers (each term's gradient share when `measure_shares`)."""
        cfg = self.cfg
        stage, _, _ = stage_at(self.step, self.stages)
        for group in self.opt.param_groups:
            group["betas"] = cfg.betas_pixel if stage == 2 else cfg.betas_latent
        heads = heads_at(self.step, self.stages, self.net.config.scales, cfg.single_head_fraction)
        batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in next(self._batches).items()}
        self.model.train()
        terms = self.loss_terms(batch, heads, stage)
        loss = sum(terms.values())
        shares = gradient_shares(terms, [p for p in self.net.parameters() if p.requires_grad]) if measure_shares else {}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.tensor(0.0)
        )
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.net)
        self.step += 1
        value = float(loss.detach())
        return {
            "step": self.step,
            "stage": STAGE_NAMES[stage],
            "heads": heads,
            "loss": value,
            **{k: float(v.detach()) for k, v in terms.items()},
            "loss_share": {k: round(float(v.detach()) / value, 5) if value else 0.0 for k, v in terms.items()},
            **({"grad_share": shares} if shares else {}),
            "grad_norm": float(grad_norm),
            "lr": lr,
        }

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR of decoded EMA outputs vs HR crops, next to latent- and pixel-bicubic and the AE ceiling."""
        if self.val_set is None:
            return {}
        net = MultiHead(self.ema.module).eval()
        sums: dict[str, float] = {}
        n = len(self.val_set)
        for b in range(0, n, 16):
            samples = [self.val_set[i] for i in range(b, min(n, b + 16))]
            batch = {k: torch.stack([x[k] for x in samples]).to(self.dist.device) for k in samples[0]}
            hr = batch["hr_px"]
            size = hr.shape[-2:]
            sums["ceiling"] = sums.get("ceiling", 0.0) + psnr(self.ae.decode(batch["z_hr"]), hr).sum().item()
            for s in self.net.config.scales:
                z = batch[f"z_lr{s}"]
                pred = net({s: z})[s]
                lat = resize_latent(z, tuple(pred.shape[-2:]), "bicubic")
                pix = bicubic_resize(self.ae.decode(z).clamp(0, 1), size)
                for name, img in (
                    ("lua", self.ae.decode(pred)),
                    ("latent_bicubic", self.ae.decode(lat)),
                    ("pixel_bicubic", pix),
                ):
                    key = f"x{s}_{name}"
                    sums[key] = sums.get(key, 0.0) + psnr(img, hr).sum().item()
        return {k: round(v / n, 4) for k, v in sums.items()}

    # ------------------------------------------------------------------ loop

    @property
    def total_steps(self) -> int:
        """Steps of the schedule this run follows."""
        return sum(self.stages)

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._stop = True
            self.say(f"\nsignal {signum}: stopping after this step (state will be saved)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass

    def run(self) -> Path | None:
        """Train until done (export, return its path) or stopped (state saved, return None)."""
        cfg = self.cfg
        total = self.total_steps
        self._install_signal_handlers()
        started, cpu_started, begin_step = time.time(), time.process_time(), self.step
        if self.dist.main:
            params = sum(p.numel() for p in self.net.parameters())
            self.say(
                f"training {self.family.label} LUA ({params / 1e6:.2f} M params) on {self.dist.device} x{self.dist.world}: "
                f"{len(self.train_set)} train / {len(self.val_set) if self.val_set else 0} val crops, "
                f"steps {self.stages} (from {self.step}), batch {cfg.batch_size}"
            )
        window_t, window_n = time.time(), 0
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (self.dist.main and sys.stderr.isatty()))
        while self.step < total:
            record = self.train_step(measure_shares=(self.step + 1) % cfg.log_every == 0)
            bar.update()
            window_n += 1
            done_here = self.step - begin_step
            if cfg.fit_minutes and done_here == FIT_AFTER_STEPS:
                # fit to the clock that ends the run: CPU time for equal-budget sweeps, else wall time
                spent = time.process_time() - cpu_started if cfg.max_cpu_minutes else time.time() - started
                total = self._fit_schedule(spent / done_here, spent)
                bar.total = total
            if self.step % cfg.log_every == 0 or self.step == total:
                dt = (time.time() - window_t) / max(1, window_n)
                record["sec_per_step"] = round(dt, 4)
                record["samples_per_sec"] = round(cfg.batch_size * self.dist.world / dt, 2)
                self._log(record)
                window_t, window_n = time.time(), 0
                bar.set_postfix(loss=f"{record['loss']:.4f}", stage=record["stage"])
                if bar.disable and self.dist.main:  # no terminal (a logged background run): one line per log step
                    eta = dt * (total - self.step)
                    self.say(
                        f"\rstep {self.step}/{total} [{record['stage']}] loss {record['loss']:.4f} "
                        f"{record['samples_per_sec']:.1f} samples/s eta {eta / 60:.1f} min"
                    )
            if self.step % cfg.val_every == 0 or self.step == total:
                self._validate_and_plot()
            stop = self._stop or (cfg.stop_after and done_here >= cfg.stop_after)
            stop = stop or (cfg.max_minutes and (time.time() - started) / 60 >= cfg.max_minutes)
            stop = stop or (cfg.max_cpu_minutes and (time.process_time() - cpu_started) / 60 >= cfg.max_cpu_minutes)
            stop = self.dist.any_rank(bool(stop))
            if self.step % cfg.save_every == 0 or stop or self.step == total:
                self.save_state()
            if stop and self.step < total:
                if self.dist.main:
                    self.say(
                        f"stopped at step {self.step}/{total}; continue with: python -m lua_core train "
                        f"--run-dir {self.run_dir} --resume"
                    )
                self._finish()
                return None
        bar.close()
        exported = self.export() if self.dist.main else None
        self._finish()
        return exported

    def _fit_schedule(self, sec_per_step: float, elapsed: float) -> int:
        """Rescale this run's stages so the curriculum ends inside --fit-minutes; returns the new total steps."""
        sec_per_step = self.dist.max_over_ranks(sec_per_step)  # every rank must follow one schedule: the slowest's
        self.stages = fit_stages(self.stages, self.step, sec_per_step, elapsed, self.cfg.fit_minutes)
        stages = list(self.stages)
        if self.dist.main:
            self.say(f"\nfit to {self.cfg.fit_minutes} min at {sec_per_step:.3f} s/step: stage steps {stages}")
        self._log({"step": self.step, "fitted_stage_steps": stages, "sec_per_step": round(sec_per_step, 4)})
        return self.total_steps

    def _validate_and_plot(self) -> None:
        if not self.dist.main:
            return
        metrics = self.validate()
        if metrics:
            self._log({"step": self.step, "val": metrics})
            self.say("\n  val " + " ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
            if self.can_plot:
                from .plots import plot_run

                plot_run(self.log_path, self.run_dir)

    def _finish(self) -> None:
        if self.dist.world > 1:
            sums = self.dist.gather(state_checksum(self.net))
            self._log({"step": self.step, "replica_checksums": sums, "replicas_identical": len(set(sums)) == 1})
            if len(set(sums)) != 1:
                raise RuntimeError(f"DDP replicas diverged: checksums {sums}")
            # the DDP wrapper's reducer holds gloo work; freed only at interpreter exit, after the group is gone, it
            # once aborted the process ("terminate called without an active exception"): free it while the group lives
            self.model = self.model.module
            gc.collect()
            self.dist.close()

    def export(self, path: str | None = None) -> Path:
        """Write the EMA weights in our safetensors format with full provenance."""
        cfg = self.cfg
        out = Path(path or cfg.export or self.run_dir / f"lua-{self.family.name}.safetensors")
        out.parent.mkdir(parents=True, exist_ok=True)
        last_val = {}
        if self.log_path.is_file():
            for line in self.log_path.read_text().splitlines():
                rec = json.loads(line)
                if "val" in rec:
                    last_val = {"step": rec["step"], **rec["val"]}
        provenance = {
            "trained_by": "lua_core train (three-stage curriculum)",
            "data": Path(cfg.data).name,
            "images": self.index["images"],
            "tiles": self.index["counts"],
            "tile_px": cfg.tile,
            "crop_px": cfg.crop,
            "steps": self.step,
            "stage_steps": self.stages,
            "batch_size": cfg.batch_size * self.dist.world,
            "vae": f"{self.family.tiny_ae} tiny autoencoder (TAESD family), not the full {self.family.label} VAE",
            "validation_psnr": last_val,
            "date": _dt.date.today().isoformat(),
            "note": cfg.note,
            **({"initialised_from": Path(cfg.init_from).name} if cfg.init_from else {}),
        }
        info = ModelInfo(self.ema.module.config, self.family, provenance)
        save_safetensors(self.ema.module, info, out, dtype=getattr(torch, cfg.export_dtype))
        self.say(f"\nexported EMA weights to {out}")
        return out


def train(cfg: TrainConfig, resume: bool = False) -> Path | None:
    """Run (or continue) a training run; returns the exported model path when it completes."""
    return Trainer(cfg, resume=resume).run()
