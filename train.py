"""Train a registration network: ``python train.py [experiment=NAME] [key=value ...]``.

A thin wrapper around :func:`rdmm_lightning.training.main` (also ``rdmm train``); see
``python train.py --help`` and ``configs/train.yaml``.
"""

import sys

from rdmm_lightning.training import main

if __name__ == "__main__":
    sys.exit(main())
