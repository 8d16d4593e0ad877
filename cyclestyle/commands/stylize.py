"""``cyclestyle stylize``: paint one photo in the style of one painting (Gatys et al.), no training needed."""

import argparse

from cyclestyle.commands import positive_int


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="single-image neural style transfer (Gatys et al.), no training",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--content", required=True, metavar="PHOTO", help="the image to repaint")
    p.add_argument("--style", required=True, metavar="PAINTING", help="the image whose style is copied")
    p.add_argument("--output", required=True, metavar="FILE", help="the result (.png, .jpg, .webp, ...)")
    p.add_argument("--size", type=positive_int, default=512, metavar="N",
                   help="longer side of the output in px (the content's aspect ratio is kept)")
    p.add_argument("--steps", type=positive_int, default=300, help="optimisation steps (at the coarsest scale)")
    p.add_argument("--scales", type=positive_int, default=1, metavar="K",
                   help="optimise at size/2^(K-1) first, then upsample and refine at each doubling")
    p.add_argument("--refine-steps", type=positive_int, default=None, metavar="N",
                   help="steps at each finer scale (None: steps // 4)")
    p.add_argument("--style-weight", type=float, default=1e6,
                   help="weight of the Gram loss (mean squared Gram difference, summed over relu1_1 ... relu5_1)")
    p.add_argument("--content-weight", type=float, default=1.0,
                   help="weight of the content loss (mean squared relu4_2 difference)")
    p.add_argument("--tv-weight", type=float, default=0.0,
                   help="total-variation smoothing against pixel noise (0: off, as in Gatys et al.)")
    p.add_argument("--style-scale", type=float, default=1.0,
                   help="the style image is resized to this times the output's longer side (larger: bigger strokes)")
    p.add_argument("--init", choices=("content", "noise"), default="content", help="start from the photo or noise")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs", help="L-BFGS as in Gatys et al., or Adam")
    p.add_argument("--lr", type=float, default=None, help="step size (None: 1 for lbfgs, 0.08 for adam)")
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the photo's colours: transfer luminance only, then put the photo's chroma back")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: VGG forward under autocast; Gram matrices and losses stay fp32")
    p.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|PATH",
                   help="torchvision's ImageNet VGG-19 (downloaded or cached), or a local copy of "
                        "vgg19-dcbb9e9d.pth (offline machines); 'random' is for tests only")
    p.add_argument("--save-every", type=positive_int, default=None, metavar="N",
                   help="also write the image every N steps, as OUTPUT_STEM.stepNNNN.EXT beside --output")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise for --init noise")


def run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from cyclestyle import stylize as st
    from cyclestyle.data import DataError, ImageReadError, load_image
    from cyclestyle.devices import resolve_device

    # Every check that a user can fail runs before the VGG is loaded and minutes of optimisation start.
    images = {}
    for flag, path in (("--content", args.content), ("--style", args.style)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path} does not exist")
        try:
            images[flag] = load_image(path)
        except ImageReadError as err:
            raise DataError(f"{flag}: {err}") from None
    output = Path(args.output)
    st.image_format(output)
    if output.exists() and any(os.path.samefile(output, p) for p in (args.content, args.style)):
        raise DataError(f"--output {output} is one of the input images; choose another file")
    device = resolve_device(args.device)
    vgg = st.load_vgg(args.vgg_weights, option="--vgg-weights")

    last = {}

    def on_step(step: st.Step) -> None:
        last.update(step.losses)
        if args.save_every and step.step % args.save_every == 0:
            st.save_image(step.to_pil(), output.with_name(f"{output.stem}.step{step.step:04d}{output.suffix}"))

    started = time.perf_counter()
    image = st.stylize(images["--content"], images["--style"], size=args.size, steps=args.steps,
                       style_weight=args.style_weight, content_weight=args.content_weight, tv_weight=args.tv_weight,
                       init=args.init, optimizer=args.optimizer, lr=args.lr, scales=args.scales,
                       refine_steps=args.refine_steps, style_scale=args.style_scale,
                       preserve_color=args.preserve_color, device=device, precision=args.precision, vgg=vgg,
                       seed=args.seed, callback=on_step, progress=True)
    st.save_image(image, output)
    terms = ", ".join(f"{name} {value:.4g}" for name, value in last.items())
    print(f"wrote {output} ({image.size[0]}x{image.size[1]}) in {time.perf_counter() - started:.1f} s; "
          f"last step's loss: {terms}")
    return 0
