"""`python -m lua_core` info / convert / upscale, run the way a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import ROOT, make_model
from safetensors.torch import load_file, save_file

from lua_core.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lua_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_info_convert_upscale_round_trip(tmp_path, capsys):
    pth = tmp_path / "lua_small.pth"
    torch.save({"params_ema": make_model(channels=16, family="flux1").net.state_dict()}, pth)
    assert main(["info", str(pth)]) == 0
    out = capsys.readouterr().out
    assert "FLUX.1 latents, 16 channels, scales x2, x4" in out and "inferred from tensor shapes" in out

    st = tmp_path / "lua_small.safetensors"
    assert main(["convert", str(pth), "-o", str(st)]) == 0
    assert main(["info", "--json", str(st)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert info["family"] == "flux1" and info["scales"] == [2, 4] and info["inferred"] is False

    latent = torch.randn(1, 16, 12, 20)
    src = tmp_path / "in.latent"
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])}, str(src))
    dst = tmp_path / "out.latent"
    assert main(["upscale", str(st), str(src), str(dst), "--scale", "1.5"]) == 0
    out = load_file(str(dst))
    assert out["latent_tensor"].shape == (1, 16, 18, 30)
    assert "latent_format_version_0" in out


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"not a model at all")
    proc = run_cli("info", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: notes.safetensors is neither a safetensors file nor a PyTorch checkpoint")
    assert "Traceback" not in proc.stderr


def test_upscale_rejects_wrong_family(tmp_path):
    model = tmp_path / "sdxl.safetensors"
    make_model(channels=4, family="sdxl").save(model)
    src = tmp_path / "flux.safetensors"
    save_file({"samples": torch.randn(1, 16, 8, 8)}, str(src))
    proc = run_cli("upscale", str(model), str(src), str(tmp_path / "o.safetensors"))
    assert proc.returncode == 2
    assert "expects 4-channel SDXL latents but got 16 channels (SD3/FLUX.1)" in proc.stderr


def test_help_lists_subcommands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("info", "convert", "upscale", "train", "eval", "demo"):
        assert cmd in proc.stdout
