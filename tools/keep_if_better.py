"""Keep a new bundled file only if the quality report says it beats the file it replaced; else put the old back.

    cp models/lua-sdxl-small.safetensors runs/sdxl-before.safetensors; cp bench/results/quality.json runs/before.json
    cp runs/sdxl-selected.safetensors models/lua-sdxl-small.safetensors
    python bench/quality.py --families sdxl --limit 16 --update --previous runs/before.json
    python tools/keep_if_better.py --family sdxl --before-file runs/sdxl-before.safetensors --before-report runs/before.json

"Beats" = mean PSNR >= the old file's on every scale and > on at least one (bench/quality.py's per-image
numbers of both files on the same images). Otherwise the old file and its report entry are restored.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True)
    p.add_argument("--before-file", required=True, help="a copy of the bundled file before it was replaced")
    p.add_argument("--before-report", required=True, help="a copy of the quality report before the new run")
    p.add_argument("--report", default=str(ROOT / "bench" / "results" / "quality.json"))
    p.add_argument("--pattern", default="lua-{family}-small.safetensors")
    args = p.parse_args()

    report = json.loads(Path(args.report).read_text())
    scales = report["families"][args.family]["scales"]
    if any("previous_model" not in s for s in scales.values()):
        raise SystemExit(f"{args.report}: {args.family} has no previous-file numbers; run bench/quality.py --previous")
    delta = {sc: round(s["mean"]["lua"]["psnr"] - s["previous_model"]["lua_psnr"], 4) for sc, s in scales.items()}
    better = all(d >= 0 for d in delta.values()) and any(d > 0 for d in delta.values())
    print(f"{args.family}: new - old file = {delta} dB -> {'keep the new file' if better else 'restore the old file'}")
    if not better:
        shutil.copy(args.before_file, ROOT / "models" / args.pattern.format(family=args.family))
        before = json.loads(Path(args.before_report).read_text())
        report["families"][args.family] = before["families"][args.family]
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        sys.path.insert(0, str(ROOT / "bench"))
        from quality import plot  # the bars figure is drawn from the report alone

        plot(report, ROOT / "docs" / "quality-psnr.png")
        print(f"restored; docs/quality-crops-{args.family}.png still shows the new file: restore it from git")


if __name__ == "__main__":
    main()
