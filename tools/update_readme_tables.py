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
    text += ["", gpu_section()]
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


def gpu_section() -> str:
    """GPU numbers from the newest `bench/results/gpu-kit-*.json` (written by `bench/gpu_kit.py`)."""
    kits = sorted(RESULTS.glob("gpu-kit-*.json"), key=lambda p: json.loads(p.read_text())["date"])
    if not kits:
        return (
            "No GPU numbers yet: no GPU was available to the sessions so far. `python bench/gpu_kit.py OUT_DIR` "
            "measures everything below on one GPU in about 7 minutes (the device command is in its docstring); "
            "copy its `gpu-kit.json` to `bench/results/gpu-kit-<gpu>.json` and rerun this script."
        )
    kit = json.loads(kits[-1].read_text())
    rows = ["| target | measured | target | met |", "|---|---|---|---|"]
    for name, t in kit["targets"].items():
        value = t["value"] if t["value"] is None or isinstance(t["value"], str) else f"{t['value']:.4g}"
        rows.append(f"| {name} | {value} | {t['target']} | {'-' if t['met'] is None else 'yes' if t['met'] else 'no'} |")
    engine = [
        "| latent | scale | dtype | ours (ms) | reference (ms) | speed-up | peak MB ours | rel. error vs fp32 ref |",
        "|---|---|---|---|---|---|---|---|",
    ]
    engine_rows = kit["engine"] if isinstance(kit["engine"], list) else []  # a dict: the section broke
    if not engine_rows:
        engine.append(f"| engine section failed on this run: {kit['engine'].get('error')} | | | | | | | |")
    for r in engine_rows:
        if r["impl"] != "ours" or "median_ms" not in r:
            continue
        ref = next(
            (
                x
                for x in engine_rows
                if x["impl"] == "reference" and x["dtype"] == r["dtype"] and x["scale"] == r["scale"]
                and x["shape"] == r["shape"] and "median_ms" in x
            ),
            None,
        )
        engine.append(
            f"| {'x'.join(map(str, r['shape']))} | x{r['scale']} | {r['dtype']} | {r['median_ms']:.1f} | "
            f"{ref['median_ms']:.1f} | {r.get('speedup_vs_reference', 0):.2f}x | {r.get('peak_mem_mb', 0):.0f} | "
            f"{r.get('rel_l2_vs_fp32_reference', float('nan')):.1e} |"
            if ref
            else f"| {'x'.join(map(str, r['shape']))} | x{r['scale']} | {r['dtype']} | {r['median_ms']:.1f} | | | "
            f"{r.get('peak_mem_mb', 0):.0f} | |"
        )
    p = kit.get("pipeline", {})
    pipe = (
        f"Pipeline ({p.get('dtype')}, FLUX-size VAE decoder with random weights): LUA x2 + decode at "
        f"{p.get('pixels_big')} px = {p.get('latent_path_ms')} ms vs decode at {p.get('pixels_small')} px + pixel "
        f"SwinIR x2 = {p.get('pixel_path_ms')} ms ({p.get('latent_path_speedup')}x)."
        if p.get("latent_path_ms")
        else ""
    )
    g = kit.get("graph", {})
    graph = (
        f"CUDA graph of the network ({g['case']}): replay {g['graph_replay_ms']} ms vs eager {g['eager_network_ms']} ms."
        if g.get("graph_replay_ms")
        else ""
    )
    compiled = [
        f"`LUA_COMPILE={c['mode']}`: {c['compiled_ms']} ms vs eager {c['eager_ms']} ms through the engine "
        f"(first call {c['first_call_s']} s)."
        for c in kit.get("compile", [])
        if "compiled_ms" in c
    ]
    return "\n".join(
        [
            f"GPU: {kit['device']}, torch {kit['torch']}, from `bench/results/{kits[-1].name}` ({kit['date']}; "
            f"rerun: `{kit['command']}`). {kit['config']}.",
            "",
            *rows,
            "",
            *engine,
            "",
            pipe,
            "",
            graph,
            *compiled,
        ]
    )


def quality_section(short: bool = False) -> str:
    q = load("quality.json")
    if q is None:
        return "_No quality report yet: run `python bench/quality.py`._"
    rows = [
        "| family | scale | LUA | pixel bicubic | decode-resize-encode | latent bicubic | latent bislerp | AE ceiling "
        "| LUA - pixel bicubic | gate 1: >= decode-resize-encode | gate 2: >= pixel bicubic | goal (+1.0 x2 / +0.8 x4) "
        "| file it replaced |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam, r in q["families"].items():
        for sc, s in r["scales"].items():
            m = s["mean"]
            marks = ["met" if ok else "**missed**" for ok in s["gates"].values()]
            prev = s.get("previous_model")
            before = f"{prev['lua_psnr']:.2f} (file of {prev['date']})" if prev else "none (new family)"
            rows.append(
                f"| {fam} | {sc} | {m['lua']['psnr']:.2f} / {m['lua']['ssim']:.3f} | {m['pixel_bicubic']['psnr']:.2f} / {m['pixel_bicubic']['ssim']:.3f} "
                f"| {m['reencode']['psnr']:.2f} | {m['latent_bicubic']['psnr']:.2f} | {m['latent_bislerp']['psnr']:.2f} "
                f"| {m['ceiling']['psnr']:.2f} | {s['lua_minus_pixel_bicubic_db']:+.2f} dB | " + " | ".join(marks) + f" | {before} |"
            )
    head = (
        f"PSNR (dB) / SSIM against the HR image on {q['n_images']} held-out images (never trained on), from "
        f"`bench/results/quality.json` ({q['date']}; rerun: `{q['command']}`). {q['protocol']} All decodes use the "
        "family's tiny autoencoder, not the full VAE."
    )
    summary = gate_summary(q)
    return "\n".join([head, "", *rows, "", *summary, "", "![PSNR per method](docs/quality-psnr.png)" if not short else ""])


def gate_summary(q: dict) -> list[str]:
    """One plain line per gate: which family/scale rows meet it and which miss it, read from the report."""
    names = {
        "beats_decode_resize_encode": "Gate 1 (LUA >= decode -> resize -> encode, required)",
        "beats_pixel_bicubic": "Gate 2 (LUA >= pixel bicubic, required)",
        "goal_over_pixel_bicubic": "Goal (LUA >= pixel bicubic + 1.0 dB at x2 / + 0.8 dB at x4)",
    }
    lines = []
    for gate, title in names.items():
        met, missed = [], []
        for fam, r in q["families"].items():
            for sc, s in r["scales"].items():
                (met if s["gates"][gate] else missed).append(f"{fam} {sc}")
        verdict = "met by every row" if not missed else f"**missed by {len(missed)} of {len(met) + len(missed)}**"
        lines.append(f"- {title}: {verdict}" + (f"; met: {', '.join(met)}" if met and missed else "") + ".")
    return lines


def flat_section() -> str:
    """Per bundled file and scale: mean PSNR on the flat and smooth images next to pixel bicubic, and any patch."""
    f = load("flat-regions.json")
    if f is None:
        return "_No flat-area report yet: run `python bench/flat_regions.py`._"
    rows = [
        "| file | decoder matching | scale | LUA | pixel bicubic | AE round trip | LUA - pixel bicubic "
        "| images below pixel bicubic | colour patches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in f["files"].items():
        for variant, label in (("as_shipped", "as shipped"), ("decoder_matching_off", "off")):
            for sc, m in r.get(variant, {}).items():
                mean = m["mean_psnr"]
                rows.append(
                    f"| `{name}` | {label} | {sc} | {mean['lua']:.2f} | {mean['pixel_bicubic']:.2f} | {mean['ceiling']:.2f} "
                    f"| {m['lua_minus_pixel_bicubic_db']:+.2f} dB | {m['images_below_pixel_bicubic']} of {len(m['images'])} "
                    f"| {', '.join(m['patches']) or 'none'} |"
                )
    head = (
        f"Mean PSNR (dB) on six flat colours and eight smooth gradients ({f['side']} px), from "
        f"`bench/results/flat-regions.json` ({f['date']}; rerun: `{f['command'].strip()}`). A colour patch = the worst 1 % "
        f"of pixels more than {f['margin'] * 255:.0f}/255 further off than both pixel bicubic and the tiny autoencoder's "
        "own round trip (the check of `tests/test_flat_regions.py`). decoder matching \"off\" = Load LUA Model's "
        "decoder_matching off, on the heads that have it. flat(r, g, b) = a flat colour, smoothN = a random gradient."
    )
    return "\n".join([head, "", *rows])


def stage_text(stages) -> str:
    """'1000,300,2400' whether the metadata stored a string (older files) or a list."""
    return ",".join(str(v) for v in stages) if isinstance(stages, list) else str(stages)


COST_FILES = ("cost-cpu.json", "cost-cuda.json")  # bench/cost.py on a CPU; bench/gpu_kit.py's cost section


def cost_section() -> str:
    rows = []
    for name in COST_FILES:
        c = load(name)
        if c is None:
            continue
        rows.append(
            f"| {c['device']} ({c['threads']} threads, {c['dtype']}) | {c['v2_x2_s']:.3f} s | {c['v1_x2_s']:.3f} s "
            f"| {c['sdxl_vae_decode_s']:.3f} s | {c['v2_share_of_decode']:.1%} | {c['v1_share_of_decode']:.1%} "
            f"| <= {c['target_v2_share']:.0%}: {'met' if c['target_met'] else '**missed**'} |"
        )
    if not rows:
        return "_No cost report yet: run `python bench/cost.py`._"
    head = (
        "x2 of a 1x4x64² SDXL latent (1024² px once decoded), from `bench/results/cost-*.json` (`bench/cost.py`): the "
        "bundled v2 model (tiny decode, bicubic, tiny encode, residual, decoder matching where its x2 head has it), "
        "the v1 network it replaced, and the full "
        "SDXL VAE decoder at the output size (diffusers' AutoencoderKL layout, random weights), timed in one run."
    )
    table = [
        "| machine | v2 x2 | v1 x2 | SDXL VAE decode | v2 / decode | v1 / decode | target |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join([head, "", *table, *rows, *bundled_cost_rows()])


def with_scale_keys(row: dict) -> dict:
    """A bundled-file row in the present form: rows from before bench/cost.py timed x4 as well (cost-cuda.json of
    2026-12-04) name their x2 fields without the scale, and no file then had a pixel upscaler."""
    if "refine_steps" not in row:
        return row
    renamed = {k if k in ("file", "x2_s", "x2_s_without_match") else f"x2_{k}": v for k, v in row.items()}
    return {"x2_match_steps": 0, "x2_pixel_upscaler": False, **renamed}


def bundled_cost_rows() -> list[str]:
    """Every bundled v2 model's x2 and x4 to the same 1024² pixels, against the same decode."""
    lines = []
    for name in COST_FILES:
        c = load(name)
        if not c or not c.get("bundled"):
            continue
        lines += [
            "",
            f"Every bundled model on {c['device']} ({c['threads']} threads), each scale to 1024² px against the same decode:",
            "",
            "| file | scale | pixel upscaler | prior back-projection steps | decoder-matching steps | time "
            "| share of SDXL VAE decode | with Load LUA Model's decoder_matching off |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in map(with_scale_keys, c["bundled"]):
            for x in sorted({k.split("_")[0] for k in b if k.endswith("_s")}):
                off = (
                    f"{b[f'{x}_s_without_match']:.3f} s, {b[f'{x}_share_of_decode_without_match']:.1%}"
                    if f"{x}_s_without_match" in b
                    else "same (nothing to switch off)"
                )
                lines.append(
                    f"| `{b['file']}` | {x} | {'learned' if b[f'{x}_pixel_upscaler'] else 'bicubic'} "
                    f"| {b[f'{x}_refine_steps']} | {b[f'{x}_match_steps']} | {b[f'{x}_s']:.3f} s "
                    f"| {b[f'{x}_share_of_decode']:.1%} | {off} |"
                )
    return lines


def models_section() -> str:
    import sys

    from safetensors import safe_open

    sys.path.insert(0, str(ROOT))
    from lua_core.arch.reencode_residual import ReencodeResidualConfig

    rows = ["| file | family | scales | parameters | size | trained |", "|---|---|---|---|---|---|"]
    for path in sorted((ROOT / "models").glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            keys = [k for k in f.keys() if not k.endswith(("attn_mask", "relative_position_index"))]
            n = sum(_numel(f.get_slice(k).get_shape()) for k in keys)
        prov = json.loads(meta.get("lua.provenance", "{}"))
        if meta.get("lua.arch") == "reencode_residual":
            prior = json.loads(meta["lua.prior"])
            # the file's config is what runs (the config class fills in what older files did not store)
            config = ReencodeResidualConfig.from_dict(json.loads(meta["lua.config"]))
            rows.append(
                f"| `{path.name}` | {meta.get('lua.family')} | {', '.join('x' + str(s) for s in json.loads(meta['lua.scales']))} | "
                f"{n / 1e6:.2f} M ({prior['autoencoder']} prior included) | {path.stat().st_size / 1e6:.1f} MB | "
                f"v2: {training_runs(prov)}, from {' + '.join(prov.get('data', []))}"
                + (f"; {', '.join(prov['residual_disabled'])}: prior only" if prov.get("residual_disabled") else "")
                + "".join(
                    f"; {sc} residual at gain {g}" + (" (lowered for the flat-area check)" if sc in prov.get("residual_gain_trimmed", {}) else "")
                    for sc, g in prov.get("residual_gain", {}).items()
                )
                + "".join(
                    f"; {sc} prior: {k} back-projection step(s) at rate {r:g}"
                    for sc, (k, r) in prov.get("prior_refinement_by_head", {}).items()
                )
                + "".join(
                    f"; {sc} prior resized by a learned pixel upscaler (width {config.upscaler_width}, depth "
                    f"{config.upscaler_depth}: {r['trained_steps']} steps, {r['train_minutes']} min, {r['tile_pairs']} "
                    f"tile pairs, {r['date']}, {r['hardware']}, "
                    + ("MSE loss" if r["loss"] == "mse" else r["loss"].replace("mse", "MSE"))
                    + (f", low frequencies out at sigma {r['highpass']:g}" if r.get("highpass") else "")
                    + (f" from step {r['highpass_since_step']}" if "highpass_since_step" in r else "")
                    + ")"
                    for sc, r in prov.get("pixel_upscalers", {}).items()
                )
                + "".join(
                    f"; x{sc} matched to the decoder where smooth ({k} steps of {lr:g}, sigma {sg:g})"
                    for sc, k, sg, lr in config.match_by_scale
                )
                + " |"
            )
            continue
        rows.append(
            f"| `{path.name}` | {meta.get('lua.family')} | {', '.join('x' + str(s) for s in json.loads(meta['lua.scales']))} | "
            f"{n / 1e6:.2f} M | {path.stat().st_size / 1e6:.1f} MB | {prov.get('steps', '?')} steps ({stage_text(prov.get('stage_steps', ''))}), "
            f"{prov.get('date', '')}{', from ' + prov['initialised_from'] if prov.get('initialised_from') else ''} |"
        )
    return "\n".join(rows)


def training_runs(prov: dict) -> str:
    """'700 steps (7.1 min, 216 tiles, 2026-11-28), then 2600 steps (...) on 2 CPU threads': a warm-started file
    lists every run (each with its hardware where they differ, and the heads a run trained alone)."""
    runs, p = [], prov
    while p:
        runs.append(p)
        p = p.get("continued_from")
    hardware = {r.get("hardware") for r in runs}
    texts = [
        f"{r.get('trained_steps')} steps ({r.get('train_minutes')} min, {r.get('tiles')} tiles, {r.get('date', '')}"
        + (f", {r.get('hardware')}" if len(hardware) > 1 else "")
        + (f", {' and '.join(r['trained_heads'])} head alone" if r.get("trained_heads") else "")
        + (f", {r['loss'].upper()} loss" if r.get("loss", "l1") != "l1" else "")  # runs without the key were L1
        + ")"
        for r in reversed(runs)
    ]
    return ", then ".join(texts) + (f" on {hardware.pop()}" if len(hardware) == 1 else "")


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
    replace(ROOT / "README.md", "cost", cost_section())
    replace(ROOT / "README.md", "flat", flat_section())
    replace(ROOT / "models" / "README.md", "models", models_section())
    replace(ROOT / "models" / "README.md", "quality", quality_section(short=True).replace("docs/", "../docs/"))
    print("updated README.md and models/README.md")


if __name__ == "__main__":
    main()
