"""What ``ftx fuse`` writes: fused MLX models, GGUF files and PEFT adapters.

Its modules import MLX, so the package binds the BLAS first (``ftx.runtime.blas``).
"""

from ftx.runtime.blas import use_fast_blas

use_fast_blas()
