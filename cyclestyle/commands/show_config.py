"""``cyclestyle show-config``: print the resolved config (defaults < file < overrides)."""

import argparse

from cyclestyle.commands import EPILOG_OVERRIDES, add_config_args


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="print the resolved config (defaults < file < overrides)",
                       epilog=EPILOG_OVERRIDES, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from cyclestyle.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0
