"""PNG plots of a run's JSONL log (loss per stage, validation PSNR against the baselines)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(log_path: Path, out_dir: Path) -> list[Path]:
    """Write loss.png and val.png next to the log; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss, stages, val = [], [], [], []
    for line in Path(log_path).read_text().splitlines():
        rec = json.loads(line)
        if "val" in rec:
            val.append(rec)
        elif "loss" in rec:
            steps.append(rec["step"])
            loss.append(rec["loss"])
            stages.append(rec["stage"])
    written = []
    if steps:
        fig, ax = plt.subplots(figsize=(7, 4))
        for stage in dict.fromkeys(stages):
            xs = [s for s, st in zip(steps, stages) if st == stage]
            ys = [v for v, st in zip(loss, stages) if st == stage]
            ax.plot(xs, ys, label=f"stage {stage}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (weighted sum)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "loss.png")
    if val:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = [k for k in val[-1]["val"] if k != "ceiling"]
        for k in keys:
            ax.plot([r["step"] for r in val], [r["val"].get(k) for r in val], marker="o", label=k)
        ax.axhline(val[-1]["val"].get("ceiling", 0), color="k", ls="--", label="AE ceiling")
        ax.set_xlabel("step")
        ax.set_ylabel("validation PSNR (dB)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "val.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "val.png")
    return written
