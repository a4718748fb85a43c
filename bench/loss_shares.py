"""Each loss term's share of the loss and of the gradient norm, per curriculum stage, paper vs shipped weights.

    python bench/loss_shares.py            # writes bench/results/loss-shares.json

One real batch (16 random 256 px crops of a few training images, SDXL, taesdxl) through the shipped
lua-sdxl-small weights (v1, kept as tests/data/lua-sdxl-small-v1.safetensors). Gradient share = the term's gradient norm / the sum over terms (what the optimiser
hears from it). `paper` uses the paper's weights (lua-paper.md); `calibrated` the TrainConfig defaults,
chosen from this measurement so every enabled term is a deliberate share (tests/test_train.py checks >= 1 %).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
PAPER = {"w_down_l1": 0.1, "w_hf_l1": 0.05, "w_pix_fft": 1.0, "w_edge": 5e-5}


def main() -> None:
    import torch

    from lua_core.train.config import TrainConfig
    from lua_core.train.optim import gradient_shares
    from lua_core.train.schedule import STAGE_NAMES
    from lua_core.train.trainer import Trainer

    torch.manual_seed(0)
    report = {"benchmark": "loss-shares", "date": time.strftime("%Y-%m-%d"), "command": "bench/loss_shares.py"}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for i, p in enumerate(sorted((SHARED / "data" / "train" / "debian").rglob("*.jpg"))[:6]):
            shutil.copy(p, images / f"{i}{p.suffix}")
        for name, weights in (("paper", PAPER), ("calibrated", {})):
            cfg = TrainConfig(
                data=str(images),
                family="sdxl",
                vae_approx=str(SHARED / "vae_approx"),
                run_dir=str(Path(tmp) / "run"),
                cache_dir=str(Path(tmp) / "cache"),
                init_from=str(ROOT / "tests" / "data" / "lua-sdxl-small-v1.safetensors"),
                val_fraction=0.0,
                synthetic_tiles=4,
                **weights,
            )
            trainer = Trainer(cfg, say=lambda m: None)
            batch = next(trainer._batches)
            params = list(trainer.net.parameters())
            stages = {}
            for stage, label in enumerate(STAGE_NAMES):
                terms = trainer.loss_terms(batch, [2, 4], stage)
                total = float(sum(terms.values()))
                stages[label] = {
                    "loss": {k: round(float(v), 6) for k, v in terms.items()},
                    "loss_share": {k: round(float(v) / total, 5) for k, v in terms.items()},
                    "grad_share": gradient_shares(terms, params),
                }
            report[name] = {"weights": {k: getattr(cfg, k) for k in PAPER}, "stages": stages}
    out = ROOT / "bench" / "results" / "loss-shares.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for name in ("paper", "calibrated"):
        for label, s in report[name]["stages"].items():
            print(name, label, s["grad_share"])


if __name__ == "__main__":
    main()
