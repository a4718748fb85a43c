"""`python -m lua_core` info / convert / upscale, run the way a user runs them.

Covers what a first user hit: outputs written over inputs and models, tracebacks instead of messages,
absurd tile sizes, 16-channel files labelled as the official FLUX.1 release, and the dispatch itself.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_model
from safetensors.torch import load_file, save_file

from lua_core.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lua_core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def error_line(capsys) -> str:
    """The single stderr line of a failed command (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def info_json(path: Path, capsys) -> dict:
    """`info --json PATH`, parsed (earlier output discarded)."""
    capsys.readouterr()
    assert main(["info", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def save_latent(path: Path, latent: torch.Tensor) -> Path:
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])}, str(path))
    return path


@pytest.fixture
def sdxl_model(tmp_path) -> Path:
    path = tmp_path / "lua-sdxl.safetensors"
    make_model(channels=4, family="sdxl").save(path)
    return path


@pytest.fixture
def sdxl_latent(tmp_path) -> Path:
    return save_latent(tmp_path / "in.latent", torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0)))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# --------------------------------------------------------------------------- the happy path


def test_info_convert_upscale_round_trip(tmp_path, capsys):
    pth = tmp_path / "lua_small.pth"
    torch.save({"params_ema": make_model(channels=16, family="flux1").net.state_dict()}, pth)
    assert main(["info", str(pth)]) == 0
    out = capsys.readouterr().out
    assert "16 channels, scales x2, x4" in out and "inferred from tensor shapes" in out
    assert "no latent family recorded (16 channels (SD3/FLUX.1)); record it with: convert" in out
    assert "official" not in out

    st = tmp_path / "lua_small.safetensors"
    assert main(["convert", str(pth), "-o", str(st), "--family", "flux1"]) == 0
    info = info_json(st, capsys)
    assert info["family"] == "flux1" and info["scales"] == [2, 4] and info["inferred"] is False
    assert "source" not in info["provenance"]  # a family given by hand is not the official release

    latent = torch.randn(1, 16, 12, 20)
    src = save_latent(tmp_path / "in.latent", latent)
    dst = tmp_path / "out.latent"
    assert main(["upscale", str(st), str(src), str(dst), "--scale", "1.5"]) == 0
    out = load_file(str(dst))
    assert out["latent_tensor"].shape == (1, 16, 18, 30)
    assert "latent_format_version_0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.latent", "lua_small.pth", "lua_small.safetensors", "out.latent"]


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"not a model at all")
    proc = run_cli("info", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: notes.safetensors is neither a safetensors file nor a PyTorch checkpoint")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_upscale_rejects_wrong_family(tmp_path, sdxl_model, capsys):
    src = tmp_path / "flux.safetensors"
    save_file({"samples": torch.randn(1, 16, 8, 8)}, str(src))
    assert main(["upscale", str(sdxl_model), str(src), str(tmp_path / "o.safetensors")]) == 2
    assert "expects 4-channel SDXL latents but got 16 channels (SD3/FLUX.1)" in error_line(capsys)
    assert not (tmp_path / "o.safetensors").exists()


def test_upscale_can_skip_decoder_matching(tmp_path):
    from conftest import VAE_APPROX

    from lua_core import get_family, load_model, upscale_latent
    from lua_core.model import new_v2_model, with_decoder_match

    base = new_v2_model(get_family("sd1"), width=8, blocks=1, vae_approx=VAE_APPROX)
    with_decoder_match(base, {2: (3, 0.2, 0.05)}).save(tmp_path / "matched.safetensors")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    save_file({"latent_tensor": latent}, str(tmp_path / "in.safetensors"))
    outs = {}
    for flag in ([], ["--no-decoder-match"]):
        dst = tmp_path / f"out{len(flag)}.safetensors"
        assert main(["upscale", str(tmp_path / "matched.safetensors"), str(tmp_path / "in.safetensors"), str(dst), *flag]) == 0
        outs[bool(flag)] = load_file(str(dst))["latent_tensor"]
    assert torch.equal(outs[True], upscale_latent(base, latent, 2))
    matched = upscale_latent(load_model(tmp_path / "matched.safetensors"), latent, 2)
    assert torch.allclose(outs[False], matched, atol=1e-6) and not torch.equal(outs[True], outs[False])


# --------------------------------------------------------------------------- never destroy a file


def test_upscale_refuses_to_overwrite_its_input_unless_asked(tmp_path, sdxl_model, sdxl_latent, capsys):
    before = sdxl_latent.read_bytes()
    assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(sdxl_latent)]) == 2
    assert "is the input latent; pass --overwrite" in error_line(capsys)
    assert sdxl_latent.read_bytes() == before
    # asked explicitly: replaced in place, atomically
    assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(sdxl_latent), "--overwrite"]) == 0
    assert load_file(str(sdxl_latent))["latent_tensor"].shape == (1, 4, 16, 24)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_upscale_never_writes_over_a_model(tmp_path, sdxl_model, sdxl_latent, capsys):
    other_model = tmp_path / "lua-other.safetensors"
    make_model(channels=4, family="sdxl", seed=3).save(other_model)
    before = snapshot(tmp_path)
    for target in (sdxl_model, other_model):
        for extra in ([], ["--overwrite"]):
            assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(target), *extra]) == 2
            line = error_line(capsys)
            assert "is the model file" in line or "is not a latent file" in line, line
    assert snapshot(tmp_path) == before


def test_upscale_and_convert_refuse_an_existing_output_without_overwrite(tmp_path, sdxl_model, sdxl_latent, capsys):
    old = save_latent(tmp_path / "old.latent", torch.zeros(1, 4, 2, 2))
    before = old.read_bytes()
    assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(old)]) == 2
    assert "already exists; pass --overwrite" in error_line(capsys)
    assert old.read_bytes() == before
    assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(old), "--overwrite"]) == 0
    assert load_file(str(old))["latent_tensor"].shape == (1, 4, 16, 24)

    pth = tmp_path / "m.pth"
    torch.save({"params_ema": make_model(channels=4).net.state_dict()}, pth)
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"precious")
    assert main(["convert", str(pth), "-o", str(existing), "--family", "sd1"]) == 2
    assert "already exists; pass --overwrite" in error_line(capsys)
    assert existing.read_bytes() == b"precious"
    assert main(["convert", str(pth), "-o", str(existing), "--family", "sd1", "--overwrite"]) == 0
    assert info_json(existing, capsys)["family"] == "sd1"
    # the default output of a .safetensors input is the input itself: refused even with --overwrite
    assert main(["convert", str(existing), "--overwrite"]) == 2
    assert "would replace the file being converted" in error_line(capsys)


def test_a_failed_write_leaves_no_file(tmp_path, sdxl_model, sdxl_latent, capsys, monkeypatch):
    import safetensors.torch

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a latent")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    before = snapshot(tmp_path)
    assert main(["upscale", str(sdxl_model), str(sdxl_latent), str(tmp_path / "out.latent")]) == 2
    assert "No space left on device" in error_line(capsys)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- expected failures: one line, exit 2


def absurd_latent(path: Path) -> Path:
    """A safetensors header that claims a [1, 4, 100000, 100000] float32 latent over 64 bytes of data."""
    header = json.dumps(
        {"latent_tensor": {"dtype": "F32", "shape": [1, 4, 100000, 100000], "data_offsets": [0, 64]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    return path


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing-folder", "output folder"),
        ("no-cuda", "sees no CUDA GPU; use --device cpu"),
        ("absurd-header", "claims shape [1, 4, 100000, 100000] F32 (160,000,000,000 bytes)"),
        ("negative-tile", "--tile-size -5 is negative"),
        ("tiny-tile", "--tile-size 3 is below this model's minimum of 32 latent pixels"),
        ("missing-input", "input file not found"),
        ("bad-device", "is not a device name"),
    ],
)
def test_expected_failures_are_one_line_with_exit_code_2(tmp_path, sdxl_model, sdxl_latent, capsys, case, expected):
    if case == "no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the no-CUDA message cannot happen here")
    src, dst, extra = str(sdxl_latent), str(tmp_path / "out.latent"), []
    if case == "missing-folder":
        dst = str(tmp_path / "no" / "such" / "folder" / "out.latent")
    elif case == "no-cuda":
        extra = ["--device", "cuda"]
    elif case == "absurd-header":
        src = str(absurd_latent(tmp_path / "absurd.latent"))
    elif case == "negative-tile":
        extra = ["--tile-size", "-5"]
    elif case == "tiny-tile":
        extra = ["--tile-size", "3"]
    elif case == "missing-input":
        src = str(tmp_path / "nowhere.latent")
    elif case == "bad-device":
        extra = ["--device", "gpu0"]
    before = snapshot(tmp_path)
    assert main(["upscale", str(sdxl_model), src, dst, *extra]) == 2
    assert expected in error_line(capsys)
    assert snapshot(tmp_path) == before  # nothing written, not even a partial file


def test_a_tile_at_the_minimum_is_accepted(tmp_path, sdxl_model, capsys):
    src = save_latent(tmp_path / "big.latent", torch.randn(1, 4, 48, 48))
    assert main(["upscale", str(sdxl_model), str(src), str(tmp_path / "o.latent"), "--tile-size", "32"]) == 0
    assert load_file(str(tmp_path / "o.latent"))["latent_tensor"].shape == (1, 4, 96, 96)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_only_on_a_terminal(tmp_path, sdxl_model, monkeypatch, terminal):
    src = save_latent(tmp_path / "big.latent", torch.randn(1, 4, 48, 48))
    err = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["upscale", str(sdxl_model), str(src), str(tmp_path / "o.latent"), "--tile-size", "32"]) == 0
    if terminal:
        bar = err.getvalue()
        done = re.findall(r"x2: 100%\|#+\| (\d+)/(\d+) \[.*?tile/s\]", bar)
        assert done and done[-1][0] == done[-1][1] and int(done[-1][0]) > 1, bar  # tiled, every tile counted
    else:
        assert err.getvalue() == ""


# --------------------------------------------------------------------------- official labelling


def test_only_the_official_shapes_are_called_official_flux(tmp_path, official_pth, capsys):
    assert main(["info", str(official_pth)]) == 0
    out = capsys.readouterr().out
    assert "FLUX.1 latents" in out and "shapes match the official LUA-FLUX release exactly" in out
    converted = tmp_path / "lua_flux.safetensors"
    assert main(["convert", str(official_pth), "-o", str(converted), "--dtype", "bf16"]) == 0
    info = info_json(converted, capsys)
    assert info["family"] == "flux1" and info["provenance"]["source"] == "vaskers5/LUA-FLUX (official)"

    # any other metadata-free 16-channel network (here: an SD3 model without metadata) needs --family
    sd3 = tmp_path / "lua_sd3.pth"
    torch.save(make_model(channels=16, family="sd3").net.state_dict(), sd3)
    assert main(["convert", str(sd3), "-o", str(tmp_path / "sd3.safetensors")]) == 2
    assert "not the official LUA-FLUX network" in error_line(capsys)
    assert not (tmp_path / "sd3.safetensors").exists()
    assert main(["convert", str(sd3), "-o", str(tmp_path / "sd3.safetensors"), "--family", "sd3"]) == 0
    info = info_json(tmp_path / "sd3.safetensors", capsys)
    assert info["family"] == "sd3" and "source" not in info["provenance"]


# --------------------------------------------------------------------------- dispatch


def test_every_subcommand_registers_its_own_parser_and_handler():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0]  # the subcommands action
    assert set(sub.choices) == {"info", "convert", "upscale", "train", "train-v2", "train-upscaler", "eval", "demo"}
    for name, subparser in sub.choices.items():
        assert callable(subparser.get_default("func")), name


@pytest.mark.parametrize(
    "command,flag",
    [("train", "--stage-steps"), ("train-v2", "--images-per-folder"), ("train-upscaler", "--synthetic-tiles"), ("eval", "--max-side"), ("demo", "--output")],
)
def test_subcommand_help(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert flag in capsys.readouterr().out


def test_config_flags_say_their_default_and_refuse_a_bool_field():
    import argparse
    from dataclasses import dataclass

    from lua_core.train.flags import add_config_flags
    from lua_core.train.pixel_upscaler import UpscalerTrainConfig

    parser = argparse.ArgumentParser()
    add_config_flags(parser, UpscalerTrainConfig, skip=("model", "scale", "data"))
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["loss_on"] == "default: 'upscaled'" and helps["highpass"] == "default: -1.0"

    @dataclass(frozen=True)
    class WithBool:
        fast: bool = False

    with pytest.raises(TypeError, match="WithBool.fast: a bool field needs its own flag"):
        add_config_flags(argparse.ArgumentParser(), WithBool, skip=())


def test_help_lists_subcommands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("info", "convert", "upscale", "train", "eval", "demo"):
        assert cmd in proc.stdout


def test_without_torch_the_command_says_what_to_install_instead_of_a_traceback():
    # -S: a Python without site-packages, so torch, safetensors, numpy, pillow and tqdm cannot be imported
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "lua_core", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    expected = (
        f"error: lua_core needs torch, safetensors, numpy, pillow, tqdm, which {sys.executable} cannot import; "
        f"either run `python3 dev.py demo` in {ROOT} (it makes .venv with all of them; then use "
        f"{ROOT / '.venv' / 'bin' / 'python'} -m lua_core), or install them into this Python: "
        f"{sys.executable} -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
        "(the small CPU-only build; for CUDA see README, Install), "
        f"then {sys.executable} -m pip install safetensors numpy pillow tqdm"
    )
    assert proc.stderr.strip() == expected


def test_importing_lua_core_needs_no_torch():
    code = "import sys, lua_core; print(lua_core.__version__, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0.1.0", "False"], proc.stderr


def test_train_v2_refuses_a_decode_context_wider_than_the_context_before_any_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train-v2", "--family", "flux1", "--data", str(tmp_path), "--run-dir", str(run_dir)]
    assert main([*args, "--context", "8", "--decode-context", "9"]) == 2
    line = error_line(capsys)
    assert "--decode-context 9 must be between 0 and --context 8: use --decode-context 0..8" in line
    assert not run_dir.exists()  # refused by the config: no run folder, no tile encoded
    assert main([*args, "--crop", "100"]) == 2
    assert "--crop 100 must be a positive multiple of 32 for scales (2, 4): use --crop 96" in error_line(capsys)
