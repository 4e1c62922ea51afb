"""LoRA, DoRA and full fine-tuning on MLX.

Every module of this package imports MLX, so the package binds the BLAS first: importing any of
them, in any order, computes with the fast one (``ftx.runtime.blas``). ``tuner.inputs`` and
``tuner.metrics`` need no MLX; importing them still chooses the BLAS, which loads no MLX.
"""

from ftx.runtime.blas import use_fast_blas

use_fast_blas()
