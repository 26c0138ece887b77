"""``python -m bench``: see :mod:`bench.run`.

Some machines here set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (which OpenBLAS kernel runs,
what cache size it plans for); a user's machine does not.  OpenBLAS reads them once, when NumPy
loads it, so they are unset here, before anything imports NumPy, for this process only
(``--keep-blas-env`` keeps them); the machine line says what was unset and which kernel ran.
Tests and CI leave them alone.
"""

import os
import sys

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
removed = {} if "--keep-blas-env" in sys.argv else {
    k: os.environ.pop(k) for k in BLAS_ENV if k in os.environ}

from . import run  # noqa: E402 - after the environment is settled

run.BLAS_ENV_REMOVED.update(removed)
sys.exit(run.main())
