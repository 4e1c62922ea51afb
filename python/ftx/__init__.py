"""ftx: chat and instruction data to training-ready token arrays, and LoRA fine-tuning on MLX.

Importing ftx never imports MLX (data preparation works where MLX does not), and the heavier
parts of the API are imported on first use so that the ``ftx`` command starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    TrackerWarning,
)

if TYPE_CHECKING:
    from ftx.data import PreparedDataset, load_dataset
    from ftx.evaluation import EvalResult, evaluate
    from ftx.gguf import ConvertReport, convert
    from ftx.inference import GenerateResult, generate, open_chat
    from ftx.inspection import Inspection, inspect
    from ftx.preparation import PrepareReport, prepare
    from ftx.training import TrainReport, train

_LAZY = {
    "convert": "ftx.gguf",
    "ConvertReport": "ftx.gguf",
    "inspect": "ftx.inspection",
    "Inspection": "ftx.inspection",
    "prepare": "ftx.preparation",
    "PrepareReport": "ftx.preparation",
    "load_dataset": "ftx.data",
    "PreparedDataset": "ftx.data",
    "train": "ftx.training",
    "generate": "ftx.inference",
    "GenerateResult": "ftx.inference",
    "open_chat": "ftx.inference",
    "evaluate": "ftx.evaluation",
    "EvalResult": "ftx.evaluation",
    "TrainReport": "ftx.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ftx' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "ConvertReport",
    "DataError",
    "EvalResult",
    "FtxError",
    "FtxFileNotFoundError",
    "FtxIOError",
    "FtxPermissionError",
    "GenerateResult",
    "Inspection",
    "PrepareReport",
    "PreparedDataset",
    "TemplateError",
    "TokenizerError",
    "TrackerWarning",
    "TrainReport",
    "__version__",
    "convert",
    "evaluate",
    "generate",
    "inspect",
    "load_dataset",
    "open_chat",
    "prepare",
    "train",
]
