"""tools/parity/, the checks these tests share with the report, loaded once as ``ftx_parity``.

A plain module, not the conftest: test_masks.py reads its parameters from the checks at
collection, before any fixture (and ``from conftest import`` is ambiguous in the whole suite).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parents[2] / "tools" / "parity"
NAME = "ftx_parity"


def load() -> ModuleType:
    """The package, imported from its folder (tools/ is not installed); transformers is not
    imported, so collection stays cheap."""
    if NAME in sys.modules:
        return sys.modules[NAME]
    spec = importlib.util.spec_from_file_location(
        NAME, PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The submodules' relative imports and the dataclasses look the package up there.
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise
    return module
