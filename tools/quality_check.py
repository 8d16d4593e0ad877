#!/usr/bin/env python
"""Thin wrapper, runnable from a source checkout: ``python tools/quality_check.py ...`` ==
``python -m cyclestyle.quality_check ...`` (the ground-truth benchmark; ``--help`` lists the options)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a checkout without an installed package
    sys.path.insert(0, str(ROOT))

from cyclestyle.quality_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
