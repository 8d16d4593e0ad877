#!/usr/bin/env python
"""Thin wrapper: ``python tools/train.py --config configs/quickstart.yaml`` == ``cyclestyle train ...``."""

import sys

from cyclestyle.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
