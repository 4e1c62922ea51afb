"""One exception tree for everything ftx raises on purpose.

The Rust engine's errors are mapped onto these classes in one place (``rust/ftx-py/src/errors.rs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FtxError(Exception):
    """Base class of every error ftx raises on purpose."""


class DataError(FtxError, ValueError):
    """The input data cannot be used as a whole (too many rejects, nothing usable)."""


class TemplateError(FtxError, ValueError):
    """A chat template does not compile or fails on (almost) every record."""


class ConfigError(FtxError, ValueError):
    """An option, config key or model folder is not usable as given."""


@dataclass(frozen=True)
class Issue:
    """One configuration problem as data: which key, what was given, what is allowed."""

    key: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.allowed}"


class ConfigIssues(ConfigError):
    """A configuration with one or more problems; ``issues`` lists them all."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n  ".join(str(i) for i in issues)
        super().__init__(f"{source}: {len(issues)} configuration problem(s)\n  {lines}")


class TokenizerError(FtxError):
    """The tokenizer could not be loaded or failed."""


class TrainingInterrupted(FtxError):
    """Ctrl-C stopped a training run after a checkpoint of its last complete step."""


class TrackerWarning(UserWarning):
    """A tracker of ``report_to`` failed and was dropped; the run went on without it."""


class FtxIOError(FtxError, OSError):
    """Reading or writing a file failed."""


class FtxFileNotFoundError(FtxIOError, FileNotFoundError):
    """A file or folder that ftx needs does not exist."""


class FtxPermissionError(FtxIOError, PermissionError):
    """A file or folder cannot be read or written with the current permissions."""


__all__ = [
    "ConfigError",
    "DataError",
    "FtxError",
    "FtxFileNotFoundError",
    "FtxIOError",
    "FtxPermissionError",
    "TemplateError",
    "TokenizerError",
    "TrackerWarning",
    "TrainingInterrupted",
]
