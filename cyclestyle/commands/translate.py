"""``cyclestyle translate``: translate photos (a file or a folder) with a trained generator."""

import argparse

from cyclestyle.commands import add_checkpoint_arg, positive_int


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="translate images with a trained generator",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_arg(p)
    p.add_argument("--input", required=True, metavar="FILE|DIR", help="an image, or a folder searched at any depth")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder; sub-folders are mirrored")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=positive_int, default=None, metavar="N", help="resize so the shorter side is N px")
    size.add_argument("--max-size", type=positive_int, default=None, metavar="N",
                      help="downscale so the longer side is at most N px (default: original size)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images of equal size translated together")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 where the device computes it natively (CPUs with AVX512-BF16/AMX, Ampere+ "
                        "GPUs), else fp32")
    p.add_argument("--tile", type=positive_int, default=None, metavar="N",
                   help="translate in N px tiles (bounded memory for huge images)")
    p.add_argument("--tile-overlap", type=int, default=64, metavar="M", help="overlap of neighbouring tiles")
    p.add_argument("--format", choices=("png", "jpg", "webp"), default="png", help="output image format")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--style-image", default=None, metavar="FILE",
                       help="style-coded models: translate in the style of this painting (default: the domain's "
                            "mean style)")
    style.add_argument("--style-folder", default=None, metavar="DIR",
                       help="style-coded models: one output folder per painting in DIR (OUTPUT/STYLE/...)")
    p.add_argument("--style-mean", action="store_true", help="with --style-folder: one output, in their mean style")
    p.add_argument("--style-strength", type=float, default=argparse.SUPPRESS, metavar="S",
                   help="with --style-image/--style-folder: 0 is the domain's mean style, 1 (the default) the "
                        "painting's, in between a blend, above 1 exaggerated")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from cyclestyle.translate import Translator, check_strength

    if not Path(args.input).exists():
        raise FileNotFoundError(f"--input {args.input} does not exist")
    from cyclestyle.data import DataError, ImageReadError, list_inputs, load_image

    if args.style_mean and not args.style_folder:
        raise DataError("--style-mean needs --style-folder DIR (the paintings whose mean style is used)")
    strength = getattr(args, "style_strength", None)  # absent unless given (argparse.SUPPRESS)
    if strength is not None and not (args.style_image or args.style_folder):
        raise DataError("--style-strength needs --style-image FILE or --style-folder DIR (the style it dials)")
    strength = 1.0 if strength is None else check_strength(strength, "--style-strength")
    translator = Translator.load(args.checkpoint, args.direction, args.device, args.precision, args.checkpoint_b)
    runs = [(args.output, None)]  # (output folder, style code)
    if args.style_image or args.style_folder:
        option = "--style-image" if args.style_image else "--style-folder"
        files = ([(Path(args.style_image), Path(Path(args.style_image).name))] if args.style_image else
                 list_inputs(args.style_folder, option, folder_only=True, require=True))
        try:
            images = [load_image(f) for f, _ in files]
        except ImageReadError as err:
            raise DataError(f"{option}: {err}") from None
        codes = translator.style_code(images, mean=args.style_mean, strength=strength)
        if args.style_mean or args.style_image:
            runs = [(args.output, codes)]
        else:
            # one folder per painting, named by its path under DIR without the extension
            runs = [(Path(args.output) / rel.with_suffix(""), code[None]) for (_, rel), code in zip(files, codes)]
    for output, code in runs:
        summary = translator.translate_folder(args.input, output, fmt=args.format, overwrite=args.overwrite,
                                              size=args.size, max_size=args.max_size, batch_size=args.batch_size,
                                              tile=args.tile, overlap=args.tile_overlap, progress=True, code=code)
        print(f"translated {summary.n_done} image(s) in {summary.seconds:.1f} s "
              f"({summary.images_per_second:.2f} img/s) into {output}"
              + (f"; {summary.n_existing} already there (--overwrite to redo)" if summary.n_existing else ""))
        if summary.skipped:
            print(f"skipped {len(summary.skipped)} file(s):", file=sys.stderr)
            for path, why in summary.skipped:
                print(f"  {path}: {why}", file=sys.stderr)
    return 0
