"""``cyclestyle gallery``: a static HTML page comparing the translations of one or more checkpoints."""

import argparse

from cyclestyle.commands import positive_int


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="static HTML comparison gallery of checkpoints' translations",
                       description="Translates every image of --input with each --checkpoint and writes "
                                   "OUTPUT/index.html: thumbnails linking to full-size images, the FID/KID "
                                   "figures of `cyclestyle evaluate` when its report is found, and each "
                                   "checkpoint's config. Self-contained: no network resources.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", required=True, metavar="DIR", help="folder of photos, searched at any depth")
    p.add_argument("--output", required=True, metavar="DIR", help="where index.html and its images go")
    p.add_argument("--checkpoint", required=True, action="append", metavar="RUN_DIR|EXPORT|PTH",
                   help="a run folder, a generators file, a reference CycleGAN .pth or checkpoint folder; repeat "
                        "to compare several")
    p.add_argument("--checkpoint-b", default=None, metavar="PTH",
                   help="with one reference .pth as --checkpoint (its G_A): the G_B file, the b2a direction")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    p.add_argument("--style-image", action="append", default=[], metavar="FILE",
                   help="style-coded checkpoints: one column per painting (repeat for several)")
    p.add_argument("--style-strength", type=float, action="append", default=argparse.SUPPRESS, metavar="S",
                   help="with --style-image: one column per painting and strength (repeat; default 1, the "
                        "painting's style; 0 is the domain's mean style)")
    p.add_argument("--reconstruction", action="store_true",
                   help="also show the cycle reconstruction (e.g. A->B->A)")
    p.add_argument("--max-size", type=positive_int, default=512, metavar="N",
                   help="downscale inputs so the longer side is at most N px before translating")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    from cyclestyle.data import DataError
    from cyclestyle.gallery import build_gallery
    from cyclestyle.translate import check_strength

    strengths = getattr(args, "style_strength", None)  # absent unless given (argparse.SUPPRESS)
    if strengths is not None:
        if not args.style_image:
            raise DataError("--style-strength needs --style-image FILE (the style it dials)")
        strengths = [check_strength(s, "--style-strength") for s in strengths]

    page = build_gallery(args.input, args.output, args.checkpoint, direction=args.direction,
                         reconstruction=args.reconstruction, max_size=args.max_size, limit=args.limit,
                         device=args.device, checkpoint_b=args.checkpoint_b, styles=args.style_image,
                         strengths=strengths or [1.0])
    print(f"wrote {page} (open it in a browser; the folder is self-contained)")
    return 0
