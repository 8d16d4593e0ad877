"""``cyclestyle`` command line: thin argument parsing over the package's functions.

Each subcommand is a module with ``add_parser(subparsers)`` and ``run(args) -> int``, listed in
COMMANDS. Every error a user can cause (config, data folders, checkpoints, weights files) is printed as
one line naming the key or file, with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; imported lazily so that `cyclestyle --help` does not import torch.
COMMANDS = {
    "train": "cyclestyle.commands.train",
    "show-config": "cyclestyle.commands.show_config",
    "translate": "cyclestyle.commands.translate",
    "export": "cyclestyle.commands.export",
    "evaluate": "cyclestyle.commands.evaluate",
    "fid": "cyclestyle.commands.fid",
    "stylize": "cyclestyle.commands.stylize",
    "gallery": "cyclestyle.commands.gallery",
    "serve": "cyclestyle.commands.serve",
    "import": "cyclestyle.commands.import_reference",
    "download": "cyclestyle.commands.download",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclestyle", description="Unpaired image-to-image style translation.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the user gave us something wrong', not 'cyclestyle has a bug'."""
    from cyclestyle.checkpoint import CheckpointError
    from cyclestyle.config import ConfigError
    from cyclestyle.data import DataError
    from cyclestyle.devices import DeviceError
    from cyclestyle.download import DownloadError
    from cyclestyle.evaluation import EvaluationError
    from cyclestyle.vgg import VGGWeightsError

    # FloatingPointError: training diverged (NaN); the message names the last good checkpoint.
    return (ConfigError, DataError, DeviceError, CheckpointError, VGGWeightsError, EvaluationError, DownloadError,
            FileNotFoundError, FloatingPointError)


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
    errors = user_errors()
    try:
        return importlib.import_module(COMMANDS[args.command]).run(args)
    except errors as err:
        print(f"cyclestyle {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cyclestyle {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
