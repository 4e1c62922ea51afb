"""The package as a user installs it: import, CLI start-up, errors across the FFI boundary."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ftx
from ftx import _core

ROOT = Path(__file__).resolve().parent.parent


def test_tests_run_against_the_installed_wheel_not_the_source_tree() -> None:
    assert ROOT / "python" not in Path(ftx.__file__).resolve().parents
    assert Path(_core.__file__).suffix in {".so", ".pyd"}


def _imported_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}


@pytest.mark.parametrize(
    "code",
    [
        "import ftx",
        "from ftx.cli import main; main(['--help'])",
        "from ftx.cli import main; main(['prepare', '--help'])",
        "from ftx.cli import main; main(['chat', '--help'])",
        "from ftx.cli import main; main(['generate', '--help'])",
    ],
)
def test_mlx_is_never_imported_for_import_help_or_prepare(code: str) -> None:
    mods = _imported_modules(f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass")
    assert "ftx" in mods
    assert not {m for m in mods if m == "mlx" or m.startswith(("mlx.", "mlx_lm"))}


def test_help_loads_only_what_it_needs() -> None:
    # `ftx --help` must start fast: it lists verbs without importing them or any heavy library.
    # (Its wall time is measured in benches/test_startup.py.)
    mods = _imported_modules(
        "from ftx.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    heavy = {"numpy", "rich", "polars", "mlx", "ftx.cli.prepare", "ftx.preparation"}
    assert not heavy & mods, heavy & mods
    out = subprocess.run(
        [sys.executable, "-m", "ftx.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "prepare" in out.stdout


def test_panic_in_rust_becomes_ftx_error_not_an_abort() -> None:
    with pytest.raises(ftx.FtxError, match=r"internal error.*boom"):
        _core._debug_panic("boom")
    # The interpreter is still alive and the engine still works after the panic.
    assert _core.num_threads() >= 1


def test_exception_tree() -> None:
    assert issubclass(ftx.FtxFileNotFoundError, FileNotFoundError)
    assert issubclass(ftx.FtxFileNotFoundError, ftx.FtxIOError)
    assert issubclass(ftx.FtxIOError, OSError)
    assert issubclass(ftx.FtxPermissionError, PermissionError)
    for cls in (ftx.DataError, ftx.TemplateError, ftx.ConfigError, ftx.TokenizerError):
        assert issubclass(cls, ftx.FtxError)


def test_missing_input_raises_file_not_found_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl") as info:
        _core.expand_inputs([str(missing)])
    assert isinstance(info.value, ftx.FtxFileNotFoundError)


def test_ftx_num_threads_sets_the_pool_size() -> None:
    code = "from ftx import _core; print(_core.num_threads())"
    env = {**os.environ, "FTX_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "3"
    env["FTX_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1"


DOOR = "ftx.runtime.mlx"
SOURCES = {
    ".".join(p.relative_to(ROOT / "python").with_suffix("").parts).removesuffix(".__init__"): p
    for p in (ROOT / "python" / "ftx").rglob("*.py")
}


def _imports(tree: ast.Module) -> Iterator[tuple[ast.stmt, str, bool]]:
    """Every import of a module: the statement, the module it names, and whether it runs when
    the module is imported (top level, not under ``if TYPE_CHECKING``)."""
    top = set(map(id, tree.body))
    checking = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node, node.module, id(node) in top


def _is_mlx(module: str) -> bool:
    return module.split(".")[0] in ("mlx", "mlx_lm")


MLX_MODULES = sorted(
    name
    for name, path in SOURCES.items()
    if any(mod == DOOR for _, mod, _ in _imports(ast.parse(path.read_text())))
)


@pytest.mark.parametrize("module", sorted(set(SOURCES) - {DOOR}))
def test_mlx_is_imported_only_through_the_door_at_the_top(module: str) -> None:
    # The BLAS must be bound before libmlx.so loads, and nothing can rebind it after: so MLX is
    # reached only through ftx.runtime.mlx, at the top of a module (never inside a function,
    # where an import order nobody checks decides), and the door comes before mlx and mlx_lm.
    found = list(_imports(ast.parse(SOURCES[module].read_text())))
    door = min((node.lineno for node, mod, top in found if mod == DOOR and top), default=None)
    for node, mod, top in found:
        where = f"{SOURCES[module].name}:{node.lineno}: {mod}"
        if mod == DOOR or _is_mlx(mod):
            assert top, f"{where} is imported inside a function; import it at the top"
        if mod in ("mlx.core", "mlx.nn", "mlx.optimizers"):
            raise AssertionError(f"{where}: take mx, nn and optim from {DOOR}")
        if _is_mlx(mod):
            assert door is not None and door < node.lineno, f"{where} before {DOOR}"


FACES = [
    "ftx.training",
    "ftx.export",
    "ftx.evaluation",
    "ftx.gguf",
    "ftx.inference",
    "ftx.inspection",
    "ftx.preparation",
]


@pytest.mark.parametrize("face", [*FACES, "ftx.quickstart", "ftx.runtime.doctor"])
def test_the_face_of_every_verb_imports_no_mlx(face: str) -> None:
    mods = _imported_modules(f"import {face}")
    assert face in mods
    assert not {m for m in mods if _is_mlx(m) or m == DOOR}


@pytest.mark.skipif(sys.platform != "linux", reason="ftx binds a BLAS on Linux only")
@pytest.mark.parametrize("module", MLX_MODULES)
def test_every_module_that_imports_mlx_binds_the_fast_blas_first(module: str) -> None:
    pytest.importorskip("mlx")
    env = {k: v for k, v in os.environ.items() if k != "FTX_BLAS"} | {"LD_DEBUG": "bindings"}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if "libmlx.so" in ln and "`cblas_sgemm'" in ln]
    assert len(lines) == 1 and "_core" in lines[0].split(" to ")[1], lines


BLOCK_EXTRAS = """
import sys
class Missing:
    # The trainer extras are absent, as after `pip install ftx`: importing them fails.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("yaml", "pydantic", "mlx", "mlx_lm", "polars"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
from ftx.cli import main
main(sys.argv[1:])
"""


def test_prepare_works_with_only_the_base_dependencies(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    out = tmp_path / "prepared"
    args = ["prepare", str(example_data), "--model", str(tiny_model), "--out", str(out), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRAS, *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").is_file() and (out / "train.tokens.npy").is_file()
