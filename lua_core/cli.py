"""`python -m lua_core`: info, convert, upscale, train, eval, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .errors import LUAError

LATENT_KEY = "latent_tensor"  # ComfyUI SaveLatent/LoadLatent key


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import build_network, read_state_dict

    sd, meta = read_state_dict(args.model)
    _, info = build_network(sd, meta, Path(args.model).name)
    if args.json:
        print(
            json.dumps(
                {
                    "config": json.loads(info.config.to_json()),
                    "family": info.family.name if info.family else None,
                    "scales": list(info.scales),
                    "inferred": info.inferred,
                    "provenance": info.provenance,
                },
                indent=2,
            )
        )
    else:
        print(info.describe())
        if info.inferred and info.family is not None:
            print(
                f"family assumed {info.family.label} (no metadata; 16-channel LUA weights are the official FLUX.1 release)"
            )
        for k, v in info.provenance.items():
            print(f"  {k}: {v}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert_checkpoint
    from .model import DTYPES

    dst = args.output or str(Path(args.model).with_suffix(".safetensors"))
    if Path(dst).resolve() == Path(args.model).resolve():
        raise LUAError(f"output {dst} would overwrite the input; pass -o")
    info = convert_checkpoint(args.model, dst, family=args.family, dtype=DTYPES[args.dtype] if args.dtype else None)
    print(f"wrote {dst}: {info.describe()}")
    return 0


def _read_latent(path: str) -> tuple[torch.Tensor, str]:
    from safetensors.torch import load_file

    tensors = load_file(path)
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


def cmd_upscale(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .engine import upscale_latent
    from .model import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    latent, key = _read_latent(args.input)
    t0 = time.perf_counter()
    out = upscale_latent(model, latent, args.scale, tile_size=args.tile_size or None)
    dt = time.perf_counter() - t0
    tensors = {key: out.contiguous()}
    if key == LATENT_KEY:
        tensors["latent_format_version_0"] = torch.tensor([])  # marks raw-space latents for ComfyUI's LoadLatent
    save_file(tensors, args.output)
    print(
        f"{list(latent.shape)} -> {list(out.shape)} with {model.name} x{args.scale:g} in {dt:.2f} s; wrote {args.output}"
    )
    return 0


def cmd_train(argv: list[str]) -> int:
    from .train.config import build_parser, config_from_args
    from .train.trainer import Trainer, config_with_resume

    parser = build_parser()
    args = parser.parse_args(argv)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lua_core", description="LUA latent upscaler tools")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="print a checkpoint's config, family and scales")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("convert", help="convert a LUA checkpoint (e.g. the official lua_flux.pth) to .safetensors")
    s.add_argument("model")
    s.add_argument("-o", "--output", help="output path (default: input name with .safetensors)")
    s.add_argument("--family", help="latent family to record (needed for 4-channel files without metadata)")
    s.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="store weights in this dtype (default: as found)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("upscale", help="upscale a latent .safetensors (ComfyUI SaveLatent format or a single tensor)")
    s.add_argument("model")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--scale", type=float, default=2.0, help="1 to 4 (default 2)")
    s.add_argument("--tile-size", type=int, default=0, help="tile side in latent pixels (0 = automatic)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default cpu)")
    s.add_argument("--dtype", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    s.set_defaults(func=cmd_upscale)

    sub.add_parser("train", help="train a LUA model (see: python -m lua_core train --help)", add_help=False)
    sub.add_parser(
        "eval", help="quality report on held-out images (see: python -m lua_core eval --help)", add_help=False
    )
    sub.add_parser("demo", help="upscale a bundled sample x2 and x4 and write a comparison", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; LUAError messages are printed without a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        if argv and argv[0] == "eval":
            from .evaluation import main as eval_main

            return eval_main(argv[1:])
        if argv and argv[0] == "demo":
            from .demo import main as demo_main

            return demo_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (LUAError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
