"""ftx: chat and instruction data to training-ready token arrays, and LoRA fine-tuning on MLX.

Importing ftx never imports MLX: data preparation works where MLX does not.
"""

from __future__ import annotations

from ftx._core import __version__
from ftx.errors import (
    ConfigError,
    DataError,
    FtxError,
    FtxFileNotFoundError,
    FtxIOError,
    FtxPermissionError,
    TemplateError,
    TokenizerError,
)

__all__ = [
    "ConfigError",
    "DataError",
    "FtxError",
    "FtxFileNotFoundError",
    "FtxIOError",
    "FtxPermissionError",
    "TemplateError",
    "TokenizerError",
    "__version__",
]
