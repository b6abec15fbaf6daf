"""``python -m rdmm_lightning.training [overrides]``: the same as ``python train.py``."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m rdmm_lightning.training"))
