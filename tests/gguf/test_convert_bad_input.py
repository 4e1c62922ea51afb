"""Bad GGUF input to ``ftx convert``: one clear error naming the file and what is wrong, and
nothing written: no output folder, no staging folder, an existing output folder untouched."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from arch_models import CONFIGS, tiny_weights, write_gguf

import ftx

pytestmark = pytest.mark.mlx
pytest.importorskip("mlx.core")
gguf = pytest.importorskip("gguf")


def _only(tmp_path: Path, *names: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_gguf("llama", tiny_weights("llama"), tmp_path / "tiny.gguf", "F16")


@pytest.mark.parametrize("keep", [3, 200, 0.5, -1])
def test_a_truncated_file_is_named_and_nothing_is_written(
    keep: float, tmp_path: Path, good: Path
) -> None:
    data = good.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    good.write_bytes(data[:cut])
    with pytest.raises(ftx.ConfigError, match="cut short") as e:
        ftx.convert(good, tmp_path / "out")
    assert str(e.value).startswith(str(good))
    _only(tmp_path, "tiny.gguf")


def _with_raw_tensor(path: Path, qtype: gguf.GGMLQuantizationType) -> Path:
    """A file whose only matrix is of type ``qtype``, with bytes of the right size."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 256 // block * size), np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_tensor_type_ftx_does_not_read_is_named(tmp_path: Path) -> None:
    src = _with_raw_tensor(tmp_path / "iq2.gguf", gguf.GGMLQuantizationType.IQ2_XXS)
    with pytest.raises(ftx.ConfigError, match=r"token_embd\.weight is IQ2_XXS") as e:
        ftx.convert(src, tmp_path / "out")
    assert str(e.value).startswith(str(src))
    _only(tmp_path, "iq2.gguf")


def test_an_unknown_tensor_type_id_is_named(tmp_path: Path) -> None:
    src = _with_raw_tensor(tmp_path / "bogus.gguf", gguf.GGMLQuantizationType.Q8_0)
    data = bytearray(src.read_bytes())
    # tensor info: name, n_dims (u32), dims (u64 each), type (u32), offset (u64)
    at = data.index(b"token_embd.weight") + len("token_embd.weight") + 4 + 2 * 8
    assert struct.unpack_from("<I", data, at)[0] == gguf.GGMLQuantizationType.Q8_0
    struct.pack_into("<I", data, at, 99)
    src.write_bytes(bytes(data))
    with pytest.raises(ftx.ConfigError, match="ggml type id 99") as e:
        ftx.convert(src, tmp_path / "out")
    assert str(e.value).startswith(str(src))
    _only(tmp_path, "bogus.gguf")


def test_a_vocabulary_that_disagrees_with_the_embedding_is_named(tmp_path: Path) -> None:
    weights = tiny_weights("llama")
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[k] = weights[k][:200]
    src = write_gguf("llama", weights, tmp_path / "short.gguf")
    n = CONFIGS["llama"]["vocab_size"]
    with pytest.raises(ftx.ConfigError, match=f"{n} tokens but token_embd.weight has 200 rows"):
        ftx.convert(src, tmp_path / "out")
    _only(tmp_path, "short.gguf")


@pytest.mark.parametrize(
    ("vocab", "error"),
    [
        (("bert", "default"), "tokenizer.ggml.model = 'bert'"),
        (("gpt2", "no-such-pre"), "tokenizer.ggml.pre = 'no-such-pre' is not supported"),
    ],
)
def test_a_vocabulary_ftx_cannot_rebuild_is_named(
    vocab: tuple[str, str], error: str, tmp_path: Path
) -> None:
    src = write_gguf("llama", tiny_weights("llama"), tmp_path / "v.gguf", vocab=vocab)
    with pytest.raises(ftx.ConfigError, match=re.escape(error)) as e:
        ftx.convert(src, tmp_path / "out")
    assert str(e.value).startswith(str(src))
    _only(tmp_path, "v.gguf")


def test_an_architecture_ftx_does_not_read_is_named(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ftx.ConfigError, match=r"general\.architecture = 'mamba' is not supported"):
        ftx.convert(tmp_path / "mamba.gguf", tmp_path / "out")
    _only(tmp_path, "mamba.gguf")


def test_a_failed_forced_conversion_keeps_the_old_folder(tmp_path: Path, good: Path) -> None:
    out = tmp_path / "out"
    ftx.convert(good, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ftx.ConfigError, match="cut short"):
        ftx.convert(bad, out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _only(tmp_path, "tiny.gguf", "bad.gguf", "out")


def test_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path: Path, good: Path) -> None:
    good.write_bytes(good.read_bytes()[:1000])
    cmd = [sys.executable, "-m", "ftx.cli", "convert", str(good), "--out", str(tmp_path / "m")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(good) in lines[0] and "cut short" in lines[0], done.stderr
    _only(tmp_path, "tiny.gguf")


def test_damaged_headers_are_config_errors_or_convert(tmp_path: Path, good: Path) -> None:
    """Random bytes over the header (metadata, vocabulary, tensor table): every outcome is a
    folder or a ConfigError naming the file, never another exception or a read past the end."""
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    refused = 0
    for i in range(40):
        damaged = bytearray(data)
        for pos in rng.integers(0, 4096, size=int(rng.integers(1, 4))):
            damaged[pos] = int(rng.integers(0, 256))
        src = tmp_path / f"d{i}.gguf"
        src.write_bytes(bytes(damaged))
        try:
            ftx.convert(src, tmp_path / f"out{i}")
        except ftx.ConfigError as e:
            assert str(e).startswith(str(src))
            assert not (tmp_path / f"out{i}").exists()
            refused += 1
    assert refused > 0
