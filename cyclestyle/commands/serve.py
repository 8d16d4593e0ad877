"""``cyclestyle serve``: a local web demo (gradio) of a trained checkpoint.

gradio is an optional extra, imported only when the command runs (``cyclestyle --help`` must work without it).
"""

import argparse

from cyclestyle.commands import add_checkpoint_arg, positive_int


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="local web demo: upload a photo, download the translation",
                       description="Serves a page where one uploads a photo, chooses the direction and the output "
                                   "size and downloads the translation. Binds to 127.0.0.1 by default; one "
                                   "translation runs at a time. Needs: pip install 'cyclestyle[serve]'.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback exposes the demo (it has no login)")
    p.add_argument("--port", type=positive_int, default=7860, help="TCP port")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    # Defaults: cyclestyle.serve's constants, written out because that module imports gradio.
    p.add_argument("--max-size", type=positive_int, default=2048, metavar="N",
                   help="cap on the output's longer side, px (at most 2048)")
    p.add_argument("--default-size", type=positive_int, default=512, metavar="N",
                   help="output longer side preselected on the page, px")
    p.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB", help="largest accepted upload")
    p.add_argument("--max-pixels", type=positive_int, default=50_000_000, metavar="N",
                   help="largest accepted input image, in pixels (checked before decoding)")


def run(args: argparse.Namespace) -> int:
    import importlib
    import sys

    try:
        serve = importlib.import_module("cyclestyle.serve")
    except ModuleNotFoundError as err:  # gradio missing: one line saying what to install
        if err.name != "gradio":
            raise
        print(f"cyclestyle {args.command}: error: {err}", file=sys.stderr)
        return 2
    if not serve.MIN_SIDE <= args.max_size <= serve.MAX_SIDE:
        print(f"cyclestyle {args.command}: error: --max-size must be between {serve.MIN_SIDE} and "
              f"{serve.MAX_SIDE} px, got {args.max_size}", file=sys.stderr)
        return 2
    try:
        serve.serve(args.checkpoint, args.host, args.port, args.device, args.max_size, args.default_size,
                    args.max_upload_mb, args.max_pixels, args.checkpoint_b)
    except KeyboardInterrupt:
        pass
    return 0
