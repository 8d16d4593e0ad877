"""``cyclestyle import``: reference CycleGAN generator files as a cyclestyle generators file."""

import argparse

DESCRIPTION = ("Reads generators trained with junyanz/pytorch-CycleGAN-and-pix2pix (resnet_6/9blocks, unet_128/256, "
               "with or without dropout; stray instance-norm statistics of old files are dropped) and writes one "
               "safetensors file that every command takes: translate, export, evaluate, gallery, serve. Files are "
               "read with weights_only=True: one that holds code is refused.")


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="import reference CycleGAN generators (.pth) as a cyclestyle generators file",
                       description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PTH|DIR",
                   help="a generator .pth (G_A, or a published model: the a2b direction) or a reference "
                        "checkpoint folder with latest_net_G_A.pth / latest_net_G_B.pth")
    p.add_argument("--checkpoint-b", default=None, metavar="PTH", help="the G_B file: the b2a direction")
    p.add_argument("--output", required=True, metavar="FILE", help="the generators file to write (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from cyclestyle.reference import import_reference

    output, meta = import_reference(args.checkpoint, args.output, args.checkpoint_b)
    model = meta["model"]
    print(f"wrote {output}: {model['generator']}, ngf {model['ngf']}{', dropout' if model['dropout'] else ''}, "
          f"directions {' and '.join(meta['source'])}")
    for direction, source in meta["source"].items():
        print(f"  {direction}: {source['file']} sha256 {source['sha256']}")
    print(f"next: cyclestyle translate --checkpoint {output} --input PHOTOS --output OUT")
    return 0
