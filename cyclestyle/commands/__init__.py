"""One module per ``cyclestyle`` subcommand: ``add_parser(subparsers, name)`` and ``run(args) -> int``."""

import argparse

EPILOG_OVERRIDES = "Overrides are dotted config keys, e.g. train.lr=1e-4 data.root_a=photos/ (see configs/base.yaml)."


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="YAML config file; omitted keys take the defaults of configs/base.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def add_checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``: one trained model, as the commands that translate with it take it."""
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR|EXPORT",
                        help="a run folder (uses generators/last.safetensors) or a generators file")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
