"""``python -m rdmm_lightning.cli ...`` is the ``rdmm`` command."""

import sys

from .main import main

sys.exit(main())
