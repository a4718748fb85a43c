"""Save the /object_info entries of the core nodes our workflows use (tests/data/core_object_info.json).

Run against a live ComfyUI:  python tools/snapshot_core_nodes.py http://127.0.0.1:8188
The snapshot lets tests/test_workflows.py check widget counts and socket types without ComfyUI.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(url: str) -> None:
    types = set()
    for path in (ROOT / "workflows").glob("*.json"):
        types.update(n["type"] for n in json.loads(path.read_text())["nodes"])
    info = json.load(urllib.request.urlopen(f"{url.rstrip('/')}/object_info"))
    version = json.load(urllib.request.urlopen(f"{url.rstrip('/')}/system_stats"))["system"].get("comfyui_version")
    core = {t: info[t] for t in sorted(types) if t in info and not info[t]["python_module"].startswith("custom_nodes")}
    out = {"comfyui_version": version, "nodes": core}
    dest = ROOT / "tests" / "data" / "core_object_info.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {dest} ({len(core)} core nodes, ComfyUI {version})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
