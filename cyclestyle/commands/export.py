"""``cyclestyle export``: a generator as a TorchScript or ONNX file for deployment."""

import argparse

from cyclestyle.commands import add_checkpoint_arg


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="export a generator to ONNX or TorchScript",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_arg(p)
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--output", required=True, metavar="FILE")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    p.add_argument("--static", action="store_true", help="ONNX: fix the input shape to --example-size")
    p.add_argument("--example-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))


def run(args: argparse.Namespace) -> int:
    from cyclestyle.export import export_model

    path = export_model(args.checkpoint, args.output, args.format, args.direction, tuple(args.example_size),
                        dynamic=not args.static, checkpoint_b=args.checkpoint_b)
    print(f"wrote {path} ({args.format}, {args.direction}, input (N,3,H,W) in [-1, 1])")
    return 0
