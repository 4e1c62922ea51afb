"""Deprecated: the face of ``ftx fuse`` is ``ftx.export`` now; this old path still works."""

import warnings

from ftx.export import FuseOptions, FuseReport, fuse

warnings.warn(
    "ftx.fuse is deprecated; import FuseOptions, FuseReport and fuse from ftx.export",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["FuseOptions", "FuseReport", "fuse"]
