"""`python -m lua_core` (or `lua-upscale`): info, convert, upscale, train, eval, demo.

Each subcommand's flags and handler come from its module (`add_arguments(parser)` sets `func`);
`main` parses once and dispatches. Expected failures print one `error:` line and exit with code 2.
Outputs are never written over an input, a model, or any existing file without `--overwrite`, and
always through a temporary file renamed into place, so a failure leaves no partial file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LUAError
from .fileio import HeaderError, atomic_write
from .fileio import read_safetensors_header as read_header

if TYPE_CHECKING:  # torch is imported by the commands, after main() has checked it is installed
    import torch

LATENT_KEY = "latent_tensor"  # ComfyUI SaveLatent/LoadLatent key
LATENT_KEYS = {LATENT_KEY, "latent_format_version_0", "samples"}
EXIT_ERROR = 2
# bytes per element of each safetensors dtype, to check a header against the file size before reading
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
_DTYPE_BYTES |= {"I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# what every command needs (import name -> pip name); checked before anything imports them
REQUIRED_MODULES = {"torch": "torch", "safetensors": "safetensors", "numpy": "numpy", "PIL": "pillow", "tqdm": "tqdm"}
CPU_TORCH = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


# --------------------------------------------------------------------------- shared checks


def missing_requirements() -> str | None:
    """One message naming what this Python lacks and how to get it, or None when everything imports."""
    missing = [pip for mod, pip in REQUIRED_MODULES.items() if importlib.util.find_spec(mod) is None]
    if not missing:
        return None
    pip = f"{sys.executable} -m pip install"
    steps = []
    if "torch" in missing:
        steps.append(f"{pip} {CPU_TORCH} (the small CPU-only build; for CUDA see README, Install)")
    if [m for m in missing if m != "torch"]:
        steps.append(f"{pip} {' '.join(m for m in missing if m != 'torch')}")
    install = f"install them into this Python: {', then '.join(steps)}"
    pack = Path(__file__).resolve().parent.parent
    if (pack / "dev.py").is_file():  # a checkout of the pack, not an installed wheel
        install = (
            f"either run `python3 dev.py demo` in {pack} (it makes .venv with all of them; then use "
            f"{pack / '.venv' / 'bin' / 'python'} -m lua_core), or {install}"
        )
    return f"lua_core needs {', '.join(missing)}, which {sys.executable} cannot import; {install}"


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output whose folder is missing or that exists without --overwrite."""
    folder = output.absolute().parent
    if not folder.is_dir():
        raise LUAError(f"output folder {folder} does not exist; create it first or choose another output path")
    if output.is_dir():
        raise LUAError(f"output {output} is a folder; give a file name")
    if output.exists() and not overwrite:
        raise LUAError(f"{output} already exists; pass --overwrite to replace it, or choose another output name")


def same_file(a: Path, b: Path) -> bool:
    """True when both paths name one existing file (symlinks and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def progress_bar(desc: str, unit: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """(update(done, total), close()) of a tqdm bar on stderr, drawn only when stderr is a terminal."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total  # the engine may restart with smaller tiles after out-of-memory: set, do not add
        bar.n = done
        bar.refresh()

    return update, bar.close


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked against the file's size before any tensor is read."""
    if not path.is_file():
        raise LUAError(f"input file not found: {path}")
    size = path.stat().st_size
    try:
        header, data_start = read_header(path)
    except HeaderError as e:
        raise LUAError(f"{path}: {e}; expected a ComfyUI SaveLatent file (save the latent again)") from e
    data_bytes = size - data_start
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            shape, dtype, (start, end) = list(entry["shape"]), entry["dtype"], entry["data_offsets"]
            need = math.prod(int(d) for d in shape) * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as e:
            raise LUAError(f"{path}: tensor {key!r} has an unreadable header entry ({e!r}); save it again") from e
        if end - start != need or not 0 <= start <= end <= data_bytes:
            raise LUAError(
                f"{path}: tensor {key!r} claims shape {shape} {dtype} ({need:,} bytes) but the file holds "
                f"{data_bytes:,} bytes of data; the file is damaged or not a latent"
            )
    return header


def is_latent_file(path: Path) -> bool:
    """True for a ComfyUI SaveLatent file or a single-tensor 4-D/5-D safetensors (what `upscale` writes)."""
    try:
        header = read_safetensors_header(path)
    except LUAError:
        return False
    meta = header.get("__metadata__") or {}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if any(k.startswith("lua.") for k in meta):
        return False  # a LUA model's metadata
    if not tensors:
        return False
    return set(tensors) <= LATENT_KEYS or (len(tensors) == 1 and len(next(iter(tensors.values()))["shape"]) in (4, 5))


def read_latent(path: Path) -> tuple[torch.Tensor, str]:
    """The latent tensor of a ComfyUI SaveLatent file (or any single 4-D/5-D tensor) and its key."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LUAError(f"{path} could not be read as safetensors ({e}); save the latent again") from e
    for key in (LATENT_KEY, "samples"):
        if key in tensors:
            return tensors[key], key
    candidates = [k for k, v in tensors.items() if v.ndim in (4, 5)]
    if len(candidates) != 1:
        raise LUAError(
            f"{path}: expected a tensor named '{LATENT_KEY}' (ComfyUI SaveLatent) or 'samples', "
            f"or exactly one 4-D/5-D tensor; found {sorted(tensors)}"
        )
    return tensors[candidates[0]], candidates[0]


# --------------------------------------------------------------------------- info


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `info`."""
    s = subparsers.add_parser("info", help="print a checkpoint's config, family and scales")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a model file."""
    from .checkpoint import build_network, is_official_flux, read_state_dict
    from .families import describe_channels, families_with_channels

    sd, meta = read_state_dict(args.model)
    _, info = build_network(sd, meta, Path(args.model).name)
    if args.json:
        print(
            json.dumps(
                {
                    "title": info.title(),
                    "arch": info.arch,
                    "config": json.loads(info.config.to_json()),
                    "prior": info.prior,
                    "family": info.family.name if info.family else None,
                    "scales": list(info.scales),
                    "inferred": info.inferred,
                    "provenance": info.provenance,
                },
                indent=2,
            )
        )
        return 0
    print(info.describe())
    if info.inferred and info.family is not None and is_official_flux(info.config):
        print(f"family {info.family.label}: no metadata, and the shapes match the official LUA-FLUX release exactly")
    elif info.family is None:
        options = "|".join(f.name for f in families_with_channels(info.channels))
        print(
            f"no latent family recorded ({describe_channels(info.channels)}); record it with: "
            f"convert {args.model} --family {options or '?'}"
        )
    for k, v in info.provenance.items():
        print(f"  {k}: {v}")
    return 0


# --------------------------------------------------------------------------- convert


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `convert`."""
    s = subparsers.add_parser("convert", help="convert a LUA checkpoint (e.g. the official lua_flux.pth) to .safetensors")
    s.add_argument("model")
    s.add_argument("-o", "--output", help="output path (default: input name with .safetensors)")
    s.add_argument(
        "--family",
        help="latent family to record: needed for files without metadata, except the official LUA-FLUX release "
        "(sd1|sdxl for 4 channels, sd3|flux1 for 16)",
    )
    s.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="store weights in this dtype (default: as found)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    """Write a model in our safetensors format (atomically; never over the input)."""
    from .checkpoint import convert_checkpoint
    from .model import DTYPES

    src = Path(args.model)
    dst = Path(args.output) if args.output else src.with_suffix(".safetensors")
    if src.resolve() == dst.resolve() or same_file(src, dst):
        raise LUAError(f"output {dst} would replace the file being converted; pass another name with -o")
    check_output(dst, args.overwrite)
    info = convert_checkpoint(src, dst, family=args.family, dtype=DTYPES[args.dtype] if args.dtype else None)
    print(f"wrote {dst}: {info.describe()}")
    return 0


# --------------------------------------------------------------------------- upscale


def add_upscale_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `upscale`."""
    s = subparsers.add_parser("upscale", help="upscale a latent .safetensors (ComfyUI SaveLatent format or a single tensor)")
    s.add_argument("model")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--scale", type=float, default=2.0, help="1 to 4 (default 2)")
    s.add_argument(
        "--tile-size", type=int, default=0, help="tile side in latent pixels (0 = automatic; else at least 4 windows)"
    )
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default cpu)")
    s.add_argument("--dtype", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    s.add_argument(
        "--no-decoder-match",
        action="store_true",
        help="skip the decoder-matching steps some v2 files carry (3-10x faster on a CPU; flat areas may show "
        "the tiny decoder's grain)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing output latent (never a model)")
    s.set_defaults(func=cmd_upscale)


def cmd_upscale(args: argparse.Namespace) -> int:
    """Upscale one latent file with a LUA model."""
    import torch
    from safetensors.torch import save_file

    from .devices import resolve_device
    from .engine import min_tile, upscale_latent
    from .model import load_model

    model_path, src, dst = Path(args.model), Path(args.input), Path(args.output)
    if args.tile_size < 0:
        raise LUAError(f"--tile-size {args.tile_size} is negative; use 0 (automatic) or a tile side in latent pixels")
    if same_file(dst, model_path) or dst.resolve() == model_path.resolve():
        raise LUAError(f"output {dst} is the model file; choose another output name")
    if dst.exists() and not is_latent_file(dst):
        raise LUAError(
            f"{dst} exists and is not a latent file (a model or other data); refusing to replace it even with "
            "--overwrite: choose another output name"
        )
    if dst.exists() and not args.overwrite and (same_file(dst, src) or dst.resolve() == src.resolve()):
        raise LUAError(f"output {dst} is the input latent; pass --overwrite to replace it, or choose another name")
    check_output(dst, args.overwrite)
    device = resolve_device(args.device)
    read_safetensors_header(src)  # a damaged or absurd latent fails before the model is loaded

    model = load_model(model_path, device=device, dtype=args.dtype, decoder_match=not args.no_decoder_match)
    if args.tile_size and args.tile_size < min_tile(model):
        raise LUAError(
            f"--tile-size {args.tile_size} is below this model's minimum of {min_tile(model)} latent pixels "
            f"({model.info.title()}); use 0 (automatic) or at least {min_tile(model)}"
        )
    latent, key = read_latent(src)
    update, close = progress_bar(f"x{args.scale:g}", "tile")
    t0 = time.perf_counter()
    try:
        out = upscale_latent(model, latent, args.scale, tile_size=args.tile_size or None, progress=update)
    finally:
        close()
    dt = time.perf_counter() - t0
    tensors = {key: out.contiguous()}
    if key == LATENT_KEY:
        tensors["latent_format_version_0"] = torch.tensor([])  # marks raw-space latents for ComfyUI's LoadLatent
    atomic_write(dst, lambda tmp: save_file(tensors, tmp))
    print(f"{list(latent.shape)} -> {list(out.shape)} with {model.name} x{args.scale:g} in {dt:.2f} s; wrote {dst}")
    return 0


# --------------------------------------------------------------------------- train


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `train` with the flags defined beside TrainConfig."""
    from .train.config import DESCRIPTION, add_arguments

    s = subparsers.add_parser("train", help="train a LUA model (see: train --help)", description=DESCRIPTION)
    add_arguments(s)
    s.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume, or export) a run."""
    from .train.config import config_from_args
    from .train.state import config_with_resume
    from .train.trainer import Trainer

    cfg = config_from_args(args)
    if args.resume:
        explicit = {k: v for k, v in vars(args).items() if k in cfg.to_dict() and v is not None}
        cfg = config_with_resume(cfg, explicit)
    trainer = Trainer(cfg, resume=args.resume or args.export_only)
    if args.export_only:
        print(trainer.export())
        return 0
    trainer.run()
    return 0


# --------------------------------------------------------------------------- entry point


def prog_name() -> str:
    """How the user called us, for usage lines: the console script or `python -m lua_core`."""
    name = Path(sys.argv[0]).name
    return name if name.startswith("lua-upscale") else "python -m lua_core"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand registered by its own module."""
    from . import demo, evaluation
    from .train import pixel_upscaler, residual

    p = argparse.ArgumentParser(prog=prog_name(), description="LUA latent upscaler tools")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_info_parser(sub)
    add_convert_parser(sub)
    add_upscale_parser(sub)
    add_train_parser(sub)
    # commands living in their own module: its docstring is the long help, its add_arguments the flags and handler
    commands = (
        ("train-v2", "train a v2 model (re-encode prior + residual)", residual),
        ("train-upscaler", "train one head's pixel upscaler inside a v2 file's prior", pixel_upscaler),
        ("eval", "quality report of one model on held-out images", evaluation),
        ("demo", "LUA x2/x4 on a bundled photo vs pixel and latent bicubic, with PSNR and timings", demo),
    )
    for name, help_line, module in commands:
        module.add_arguments(
            sub.add_parser(
                name, help=help_line, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
            )
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse once, dispatch; expected errors are one line on stderr and exit code 2."""
    missing = missing_requirements()
    if missing:  # before any command module imports torch: one line saying what to install, not a traceback
        print(f"error: {missing}", file=sys.stderr)
        return EXIT_ERROR
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LUAError, ValueError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
