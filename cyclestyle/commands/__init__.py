"""One module per ``cyclestyle`` subcommand: ``add_parser(subparsers, name)`` and ``run(args) -> int``."""

import argparse

EPILOG_OVERRIDES = "Overrides are dotted config keys, e.g. train.lr=1e-4 data.root_a=photos/ (see configs/base.yaml)."


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="YAML config file; omitted keys take the defaults of configs/base.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


CHECKPOINT_HELP = ("a run folder (uses generators/last.safetensors), a generators file, a reference CycleGAN "
                   "generator .pth (its one direction is a2b) or a reference checkpoint folder (*_net_G_A.pth, "
                   "*_net_G_B.pth)")


def add_checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` (and ``--checkpoint-b``): one trained model, as the commands that translate take it."""
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|EXPORT|PTH", help=CHECKPOINT_HELP)
    parser.add_argument("--checkpoint-b", default=None, metavar="PTH",
                        help="with a reference .pth as --checkpoint (its G_A): the G_B file, the b2a direction")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
