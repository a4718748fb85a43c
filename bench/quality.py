"""Quality report of the bundled models: PSNR/SSIM on held-out images vs every latent and pixel baseline.

    python bench/quality.py                       # all bundled models, ../shared data and tiny AEs
    python bench/quality.py --families sdxl --limit 5
    python bench/quality.py --families sd3 --update   # re-measure one family, keep the others

Writes bench/results/quality.json, docs/quality-psnr.png (bars per family and scale) and
docs/quality-crops-<family>.png (zoomed side-by-side crops). Images are the validation split the
trainer held out (same hash rule, same --val-fraction), never trained on. Decodes use each family's
tiny autoencoder, so the numbers describe that pipeline, not the full VAE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

TARGETS_DB = {"x2": 1.0, "x4": 0.8}  # LUA over pixel-space bicubic (issue targets)


def gates(scale: dict, target_db: float) -> dict[str, bool]:
    """The three quality gates of one family and scale, from its mean PSNRs."""
    m = scale["mean"]
    return {
        "beats_decode_resize_encode": m["lua"]["psnr"] >= m["reencode"]["psnr"],  # first gate, required
        "beats_pixel_bicubic": m["lua"]["psnr"] >= m["pixel_bicubic"]["psnr"],  # second gate
        "goal_over_pixel_bicubic": m["lua"]["psnr"] >= m["pixel_bicubic"]["psnr"] + target_db,  # the goal
    }


def add_previous(report: dict, family: str, previous: dict) -> None:
    """Per scale: the previous file's mean LUA PSNR on this run's images (when the old report has all of them)."""
    old = previous.get("families", {}).get(family)
    if old is None:
        return
    index = {name: i for i, name in enumerate(previous["images"])}
    if not all(name in index for name in report["images"]):
        return
    for sc, s in report["scales"].items():
        per = old["scales"].get(sc, {}).get("per_image_psnr", {}).get("lua")
        if per is None:
            continue
        prev = sum(per[index[name]] for name in report["images"]) / len(report["images"])
        s["previous_model"] = {"model": old.get("model"), "date": previous.get("date"), "lua_psnr": round(prev, 4)}
        s["beats_previous_model"] = s["mean"]["lua"]["psnr"] > prev


def plot(report: dict, dest: Path) -> None:
    """Grouped bars: PSNR per method, one panel per family and scale, with the AE ceiling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(fam, sc) for fam, r in report["families"].items() for sc in r["scales"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4), squeeze=False)
    for ax, (fam, sc) in zip(axes[0], panels):
        mean = report["families"][fam]["scales"][sc]["mean"]
        names = [m for m in mean if m != "ceiling"]
        vals = [mean[m]["psnr"] for m in names]
        colors = ["tab:red" if m == "lua" else "tab:gray" if m.startswith("latent") else "tab:blue" for m in names]
        ax.bar(range(len(names)), vals, color=colors)
        ax.axhline(mean["ceiling"]["psnr"], color="k", ls="--", lw=1)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("latent_", "lat ").replace("_", " ") for n in names], rotation=60, fontsize=7)
        ax.set_ylim(min(vals) - 2, mean["ceiling"]["psnr"] + 1)
        ax.set_title(f"{fam} {sc}", fontsize=9)
    axes[0][0].set_ylabel("PSNR (dB) vs HR; dashed = tiny-AE ceiling")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def main() -> None:
    from lua_core import load_model
    from lua_core.data_split import held_out_images
    from lua_core.evaluation import comparison_figure, evaluate
    from lua_core.tiny_ae import load_tiny_autoencoder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default="sdxl,sd1,sd3,flux1,flux2")
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--pattern", default="lua-{family}-small.safetensors", help="model file name in --models")
    p.add_argument("--data", default=str(SHARED / "data" / "train"))
    p.add_argument("--vae-approx", default=str(SHARED / "vae_approx"))
    p.add_argument("--val-fraction", type=float, default=0.08)
    p.add_argument("--max-side", type=int, default=384, help="HR crop side limit in pixels")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument(
        "--previous",
        default="",
        help="an earlier quality JSON: each family also gets the mean PSNR its previous file scored on the same images "
        "(from that report's per-image numbers), and whether the new file beats it",
    )
    p.add_argument(
        "--without-decoder-match",
        action="store_true",
        help="score the files with decoder matching off (Load LUA Model's decoder_matching 'off'); use another "
        "--output and --docs",
    )
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "quality.json"))
    p.add_argument("--docs", default=str(ROOT / "docs"))
    p.add_argument(
        "--update",
        action="store_true",
        help="keep the other families already in --output (same images and --max-side) and replace only --families",
    )
    args = p.parse_args()

    images = held_out_images(args.data, args.val_fraction)
    if args.limit:
        images = images[: args.limit]
    report = {
        "benchmark": "quality",
        "date": time.strftime("%Y-%m-%d"),
        # all families; --update runs add up to this
        "command": f"bench/quality.py --max-side {args.max_side}"
        + (f" --limit {args.limit}" if args.limit else "")
        + (" --without-decoder-match" if args.without_decoder_match else ""),
        "protocol": (
            "HR = center crop (multiple of 32, <= max_side) of each held-out image; LR latent = tiny-AE "
            "encode of the antialiased-bicubic x2/x4 downsample; PSNR/SSIM (luma SSIM) of each decoded "
            "output against HR. ceiling = decode(encode(HR))."
        ),
        "max_side": args.max_side,
        "n_images": len(images),
        "targets_db_over_pixel_bicubic": TARGETS_DB,
        "families": {},
    }
    if args.update and Path(args.output).is_file():
        previous = json.loads(Path(args.output).read_text())
        if previous.get("max_side") != args.max_side or previous.get("images") != [p.name for p in images]:
            raise SystemExit(
                f"--update: {args.output} was made with other images or --max-side; rerun without --update"
            )
        report["families"] = previous["families"]
    for fam in args.families.split(","):
        path = Path(args.models) / args.pattern.format(family=fam)
        if not path.is_file():
            print(f"skip {fam}: {path} missing", file=sys.stderr)
            continue
        model = load_model(path, decoder_match=not args.without_decoder_match)
        ae = load_tiny_autoencoder(model.family, [args.vae_approx])
        t0 = time.time()
        r = evaluate(model, ae, images, args.max_side, progress=lambda m, f=fam: print(f"{f} {m}", file=sys.stderr))
        r["model"] = path.name
        if args.previous:
            add_previous(r, fam, json.loads(Path(args.previous).read_text()))
        r["seconds"] = round(time.time() - t0, 1)
        for sc, s in r["scales"].items():
            s["gates"] = gates(s, TARGETS_DB.get(sc, 0.0))
            s["target_met"] = s["gates"]["goal_over_pixel_bicubic"]
            print(
                f"{fam} {sc}: LUA {s['mean']['lua']['psnr']:.2f} dB, pixel bicubic {s['mean']['pixel_bicubic']['psnr']:.2f}, "
                f"latent bicubic {s['mean']['latent_bicubic']['psnr']:.2f}, ceiling {s['mean']['ceiling']['psnr']:.2f} "
                f"(LUA - pixel bicubic = {s['lua_minus_pixel_bicubic_db']:+.2f} dB, target {TARGETS_DB.get(sc, 0):+.1f}); "
                f"gates {s['gates']}"
            )
        del r["images"]
        report["families"][fam] = r
        comparison_figure(model, ae, images[0], Path(args.docs) / f"quality-crops-{fam}.png", max_side=args.max_side)
    report["images"] = [p.name for p in images]
    order = ["sdxl", "sd1", "sd3", "flux1", "flux2"]
    report["families"] = dict(
        sorted(report["families"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9)
    )
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    plot(report, Path(args.docs) / "quality-psnr.png")
    print(f"wrote {args.output} and {args.docs}/quality-*.png")


if __name__ == "__main__":
    main()
