"""``cyclestyle`` command line: thin argument parsing over the package's functions.

Every error a user can cause (config, data folders, checkpoints, VGG weights) is printed as one line
naming the key or file, with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

EPILOG_OVERRIDES = "Overrides are dotted config keys, e.g. train.lr=1e-4 data.root_a=photos/ (see configs/base.yaml)."


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="YAML config file; omitted keys take the defaults of configs/base.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclestyle", description="Unpaired image-to-image style translation.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a CycleGAN on two image folders", epilog=EPILOG_OVERRIDES,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_args(p)
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the run's newest checkpoint ('latest'; starts fresh if there is none) "
                        "or from a checkpoint folder")
    p.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                   help="save a checkpoint and stop at step N (for time-limited jobs; resume later)")

    p = sub.add_parser("show-config", help="print the resolved config (defaults < file < overrides)",
                       epilog=EPILOG_OVERRIDES, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from cyclestyle import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2

    from cyclestyle.checkpoint import CheckpointError
    from cyclestyle.config import ConfigError, load_config, to_yaml
    from cyclestyle.data import DataError
    from cyclestyle.vgg import VGGWeightsError

    try:
        cfg = load_config(args.config, args.overrides)
        if args.command == "show-config":
            print(to_yaml(cfg), end="")
            return 0
        if args.command == "train":
            from cyclestyle.training import train

            result = train(cfg, resume=args.resume, stop_at_step=args.stop_at_step)
            if result.step and result.checkpoint is not None:
                print(f"cyclestyle: step {result.step}: checkpoint {result.checkpoint}, generators {result.export}")
            return 0
    except (ConfigError, DataError, CheckpointError, VGGWeightsError) as err:
        print(f"cyclestyle {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cyclestyle {args.command}: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
