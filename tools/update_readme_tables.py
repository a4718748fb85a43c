"""Regenerate the numeric tables in README.md and models/README.md from bench/results/*.json.

    python tools/update_readme_tables.py

Numbers in the docs come only from these files (never typed by hand); rerun after any benchmark.
Sections live between `<!-- BEGIN:name -->` and `<!-- END:name -->` markers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def perf_section() -> str:
    eng = load("engine-cpu.json")
    if eng is None:
        return "_No engine benchmark yet: run `python bench/bench_engine.py`._"
    m = eng["machine"]
    rows = [
        "| config | latent | dtype | ours (ms) | reference (ms) | speed-up | peak memory ours / ref (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    res = eng["results"]
    for r in res:
        if r["impl"] != "ours" or "median_ms" not in r:
            continue
        ref = next(
            (
                x
                for x in res
                if x["impl"] == "reference"
                and x["config"] == r["config"]
                and x["size"] == r["size"]
                and "median_ms" in x
            ),
            None,
        )
        speed = f"{ref['median_ms'] / r['median_ms']:.2f}x" if ref and r["dtype"] == "fp32" else ""
        ref_ms = f"{ref['median_ms']:.0f}" if ref and r["dtype"] == "fp32" else ""
        ref_mem = f" / {ref['peak_mem_mb']:.0f}" if ref and r["dtype"] == "fp32" else ""
        rows.append(
            f"| {r['config']} | 1x{16 if r['config'].startswith('official') else 4}x{r['size']}² | {r['dtype']} | "
            f"{r['median_ms']:.0f} | {ref_ms} | {speed} | {r['peak_mem_mb']:.0f}{ref_mem} |"
        )
    text = [
        f"x2 upscale, batch 1, median of repeated runs on {m.get('cpu', '?')} ({m.get('threads')} threads, torch "
        f"{m.get('torch')}), from `bench/results/engine-cpu.json` ({eng['date']}; rerun: `{eng['command']}`). "
        "Reference = the plain explicit-softmax forward in `tests/reference_lua.py`. Weights are random (timing does not "
        "depend on them).",
        "",
        *rows,
    ]
    gpu = load("engine-cuda.json")
    text.append("")
    if gpu:
        best = gpu["summary"].get("official-flux_128_x2_best_ms")
        text.append(
            f"GPU ({gpu['machine'].get('gpu')}): official config x2 on 1x16x128² in {best['ms']:.1f} ms ({best['dtype']})."
        )
    else:
        text.append(
            "No GPU numbers yet: no GPU was available to the sessions so far. `python bench/bench_engine.py --device cuda` "
            "writes `bench/results/engine-cuda.json` (target: official config, x2, 1x16x128², bf16, <= 10 ms on H100/H200)."
        )
    train = load("train-cpu-cpu.json")
    if train:
        text += [
            "",
            "Training throughput (`cpu` preset, " + f"`bench/results/train-cpu-cpu.json`, {train['date']}):",
            "",
        ]
        text += ["| stage | samples/s | s/step (batch 16) | peak RSS (MB) |", "|---|---|---|---|"]
        for st in train["stages"]:
            text.append(
                f"| {st['stage']} | {st['samples_per_sec']:.1f} | {st['sec_per_step']:.2f} | {st.get('peak_rss_mb', st.get('peak_mem_mb', 0)):.0f} |"
            )
    return "\n".join(text)


def quality_section(short: bool = False) -> str:
    q = load("quality.json")
    if q is None:
        return "_No quality report yet: run `python bench/quality.py`._"
    rows = [
        "| family | scale | LUA | pixel bicubic | latent bicubic | latent bislerp | decode-resize-encode | AE ceiling | LUA - pixel bicubic (target) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, r in q["families"].items():
        for sc, s in r["scales"].items():
            m = s["mean"]
            target = q["targets_db_over_pixel_bicubic"].get(sc, 0)
            mark = "met" if s["target_met"] else "missed"
            rows.append(
                f"| {fam} | {sc} | {m['lua']['psnr']:.2f} / {m['lua']['ssim']:.3f} | {m['pixel_bicubic']['psnr']:.2f} / {m['pixel_bicubic']['ssim']:.3f} "
                f"| {m['latent_bicubic']['psnr']:.2f} | {m['latent_bislerp']['psnr']:.2f} | {m['reencode']['psnr']:.2f} "
                f"| {m['ceiling']['psnr']:.2f} | {s['lua_minus_pixel_bicubic_db']:+.2f} dB (+{target:.1f}: {mark}) |"
            )
    head = (
        f"PSNR (dB) / SSIM against the HR image on {q['n_images']} held-out images (never trained on), from "
        f"`bench/results/quality.json` ({q['date']}; rerun: `{q['command']}`). {q['protocol']} All decodes use the "
        "family's tiny autoencoder, not the full VAE."
    )
    return "\n".join([head, "", *rows, "", "![PSNR per method](docs/quality-psnr.png)" if not short else ""])


def models_section() -> str:
    from safetensors import safe_open

    rows = ["| file | family | scales | parameters | size | trained |", "|---|---|---|---|---|---|"]
    for path in sorted((ROOT / "models").glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            keys = [k for k in f.keys() if not k.endswith(("attn_mask", "relative_position_index"))]
            n = sum(_numel(f.get_slice(k).get_shape()) for k in keys)
        prov = json.loads(meta.get("lua.provenance", "{}"))
        rows.append(
            f"| `{path.name}` | {meta.get('lua.family')} | {', '.join('x' + str(s) for s in json.loads(meta['lua.scales']))} | "
            f"{n / 1e6:.2f} M | {path.stat().st_size / 1e6:.1f} MB | {prov.get('steps', '?')} steps ({prov.get('stage_steps', '')}), "
            f"{prov.get('date', '')}{', from ' + prov['initialised_from'] if prov.get('initialised_from') else ''} |"
        )
    return "\n".join(rows)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def replace(path: Path, name: str, body: str) -> None:
    text = path.read_text()
    pattern = re.compile(rf"(<!-- BEGIN:{name} -->).*?(<!-- END:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- BEGIN:{name} --> ... <!-- END:{name} --> section")
    path.write_text(pattern.sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}", text))


def main() -> None:
    replace(ROOT / "README.md", "perf", perf_section())
    replace(ROOT / "README.md", "quality", quality_section())
    replace(ROOT / "models" / "README.md", "models", models_section())
    replace(ROOT / "models" / "README.md", "quality", quality_section(short=True).replace("docs/", "../docs/"))
    print("updated README.md and models/README.md")


if __name__ == "__main__":
    main()
