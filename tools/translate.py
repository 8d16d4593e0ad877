#!/usr/bin/env python
"""Thin wrapper: ``python tools/translate.py --checkpoint RUN --input DIR --output DIR`` == ``cyclestyle translate``."""

import sys

from cyclestyle.cli import main

if __name__ == "__main__":
    sys.exit(main(["translate", *sys.argv[1:]]))
