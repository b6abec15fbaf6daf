"""Train a registration network: ``python train.py [experiment=NAME] [key=value ...]``.

A Hydra application (``@hydra.main`` on the packaged ``configs/train.yaml``, in
:mod:`rdmm_lightning.training.app`; also ``rdmm train``): ``--help``, ``--cfg job``, ``--info``,
``-m`` sweeps, ``hydra.run.dir=DIR`` and ``--shell-completion`` work as in any Hydra app.
"""

import sys

from rdmm_lightning.training import main

if __name__ == "__main__":
    sys.exit(main())
