"""Type stub of the native module ``ftx._core`` (checked with ``mypy.stubtest``)."""

__version__: str

def _debug_panic(message: str) -> None:
    """Raises a Rust panic inside the engine, to prove that it reaches Python as ``ftx.FtxError``."""
