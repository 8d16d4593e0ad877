"""cyclestyle: unpaired image-to-image style translation (CycleGAN + VGG Gram style loss) on accelerate."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise checks PyPI on import

__version__ = "0.1.0"
