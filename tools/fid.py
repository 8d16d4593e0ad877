#!/usr/bin/env python
"""Thin wrapper: ``python tools/fid.py DIR_OR_FEATURES DIR_OR_FEATURES [options]`` == ``cyclestyle fid``."""

import sys

from cyclestyle.cli import main

if __name__ == "__main__":
    sys.exit(main(["fid", *sys.argv[1:]]))
