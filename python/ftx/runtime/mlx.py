"""The one door to MLX: importing this module binds the fast BLAS, then loads MLX.

MLX's CPU GEMMs compute with whatever BLAS the global scope offers when ``libmlx.so`` loads, so
the choice (``ftx.runtime.blas``) must come first and cannot be undone. Every ftx module that
computes imports ``mx``, ``nn`` and ``optim`` from here at its top, before any other MLX or
mlx-lm import (ruff's isort keeps this module in a section of its own above the third-party
ones); no ftx module imports MLX another way (``tests/test_house.py`` checks both). A module
that must work without MLX does not import this one.
"""

from ftx.runtime.blas import use_fast_blas

BLAS = use_fast_blas()

import mlx.core as mx  # noqa: E402  (after the BLAS, on purpose)
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402

__all__ = ["BLAS", "mx", "nn", "optim"]
