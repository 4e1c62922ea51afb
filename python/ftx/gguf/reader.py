"""A GGUF file: metadata as Python values, every tensor's type and extent checked against the
file, and its data handed to MLX.

The header is parsed here, with the ``gguf`` package's constants (value and tensor types, block
sizes): the package's own ``GGUFReader`` makes a NumPy array of every string, which takes ~54 s
for the 151,936 tokens and 151,387 merges of a Qwen2 vocabulary (this parser: under a second),
and MLX's reader refuses K-quant files. Every read is bounds-checked, so a file cut short or
damaged is a ConfigError naming it, never a read past its end.

One path for every tensor type. Float tensors are copied as they are. Q4_0, Q4_1 and Q8_0
blocks are MLX's own affine quantization in another byte order (one float16 scale, and an
offset, per 32 values), so they are repacked, not dequantized: no loss, and the same arrays
``mx.load`` makes of them. Every other supported type (Q5_0, Q5_1 and the K-quants) is
dequantized by ``gguf.quants``, the reference implementation of llama.cpp's, to float.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx

import gguf
import numpy as np
import numpy.typing as npt

from ftx.errors import ConfigError

Q = gguf.GGMLQuantizationType
# Kept quantized: type -> (bits, the offset of its unsigned values (w = d * (u - offset)), whether
# a min is stored instead).
KEPT = {Q.Q4_0: (4, 8, False), Q.Q4_1: (4, 0, True), Q.Q8_0: (8, 128, False)}
FLOATS = (Q.F32, Q.F16, Q.BF16)
DEQUANTIZED = (Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
SUPPORTED = (*FLOATS, *KEPT, *DEQUANTIZED)
GROUP_SIZE = 32  # values per block of every type in KEPT

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class RawTensor:
    """One tensor as the file holds it: ``data`` is its bytes, a view of the mapped file."""

    name: str
    type: gguf.GGMLQuantizationType
    # numpy order: rows first, values per row last
    shape: tuple[int, ...]
    data: Array

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def kept_bits(self) -> int | None:
        """The bit width MLX keeps this tensor at, if it stays quantized."""
        return KEPT[self.type][0] if self.type in KEPT else None

    def floats(self, dtype: mx.Dtype) -> mx.array:
        """The values, dequantized if need be, as ``dtype``."""
        if self.type in _NUMPY:
            return mx.array(self.data.view(_NUMPY[self.type]).reshape(self.shape)).astype(dtype)
        if self.type == Q.BF16:
            bits = self.data.view(np.uint16).reshape(self.shape)
            return mx.array(bits).view(mx.bfloat16).astype(dtype)
        # float32 either way: dequantizing in half precision would round each product.
        rows = self.data.reshape(*self.shape[:-1], -1)
        return mx.array(gguf.quants.dequantize(rows, self.type)).astype(dtype)

    def blocks(self) -> tuple[mx.array, mx.array, mx.array]:
        """A Q4_0/Q4_1/Q8_0 tensor as MLX's packed ``uint32`` weight, float16 scales, biases."""
        bits, offset, has_min = KEPT[self.type]
        rows = int(np.prod(self.shape[:-1]))
        per_block = GROUP_SIZE * bits // 8 + (4 if has_min else 2)
        raw = self.data.reshape(rows, -1, per_block)
        scales = raw[..., :2].copy().view(np.float16)[..., 0]
        start = 4 if has_min else 2
        q = raw[..., start:]
        if bits == 8:
            # MLX stores int8 value v as v + 128: the byte of v with its top bit flipped
            packed = q ^ np.uint8(0x80)
        else:
            # llama.cpp: value j in the low nibble of byte j, value j + 16 in its high nibble;
            # MLX: values in order, two to a byte, low nibble first.
            values = np.concatenate([q & 0xF, q >> 4], axis=-1)
            packed = values[..., 0::2] | (values[..., 1::2] << 4)
        if has_min:
            biases = raw[..., 2:4].copy().view(np.float16)[..., 0]
        else:
            biases = (scales * np.float16(-offset)).astype(np.float16)
        weight = np.ascontiguousarray(packed).reshape(rows, -1).view(np.uint32)
        shape = (*self.shape[:-1], -1)
        return (
            mx.array(weight.reshape(shape)),
            mx.array(scales.reshape(shape)),
            mx.array(biases.reshape(shape)),
        )


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, RawTensor]


_NUMPY = {Q.F32: np.float32, Q.F16: np.float16}
V = gguf.GGUFValueType
_SCALARS = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<?",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


class _CutShort(Exception):
    pass


class _Cursor:
    """Little-endian reads from the mapped file, each checked against its end."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise _CutShort(f"{n:,} bytes at byte {start:,}")
        self.pos += n
        return start

    def scalar(self, fmt: str) -> Any:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        at = self.take(n)
        return self.buf[at : at + n].decode("utf-8")

    def value(self, kind: int) -> Any:
        if kind == V.STRING:
            return self.string()
        if kind in _SCALARS:
            return self.scalar(_SCALARS[V(kind)])
        if kind != V.ARRAY:
            raise ValueError(f"metadata value type {kind} is unknown")
        item, count = self.scalar("<I"), self.scalar("<Q")
        if item == V.STRING:
            return [self.string() for _ in range(count)]
        if item not in _SCALARS:
            raise ValueError(f"metadata array item type {item} is not supported")
        fmt = _SCALARS[V(item)]
        at = self.take(count * struct.calcsize(fmt))
        return np.frombuffer(self.buf, np.dtype(fmt), count, at).tolist()


def gguf_version() -> str:
    return version("gguf")


def read_gguf(src: Path) -> GGUFFile:
    """The metadata and tensors of ``src``; a ConfigError naming the file if it is not a whole
    GGUF file or holds a tensor type ftx cannot read."""
    with src.open("rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:  # an empty file
            raise ConfigError(f"{src}: not a GGUF file ({e})") from e
    try:
        return _parse(src, buf)
    except _CutShort as e:
        raise ConfigError(
            f"{src}: the file is cut short ({len(buf):,} bytes; needed {e}): not a whole GGUF file"
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{src}: a metadata string is not UTF-8 ({e}): damaged file?") from e
    except ValueError as e:
        raise ConfigError(f"{src}: not a readable GGUF file: {e}") from e


def _parse(src: Path, buf: mmap.mmap) -> GGUFFile:
    c = _Cursor(buf)
    if c.scalar("<I") != gguf.GGUF_MAGIC:
        raise ValueError("no GGUF magic number at its start")
    v = c.scalar("<I")
    if v not in (2, 3):
        raise ValueError(f"GGUF version {v} (big-endian, or not one of 2, 3)")
    n_tensors, n_kv = c.scalar("<Q"), c.scalar("<Q")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.scalar("<I"))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.scalar("<I")
        if not 1 <= n_dims <= 4:
            raise ValueError(f"tensor {name} has {n_dims} dimensions")
        dims = [c.scalar("<Q") for _ in range(n_dims)]
        type_id, offset = c.scalar("<I"), c.scalar("<Q")
        infos.append((name, dims, type_id, offset))
    align = meta.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise ValueError(f"general.alignment = {align!r} is not a power of two")
    start = -(-c.pos // align) * align
    tensors: dict[str, RawTensor] = {}
    for name, dims, type_id, offset in infos:
        try:
            qtype = Q(type_id)
        except ValueError:
            raise ConfigError(
                f"{src}: tensor {name} has ggml type id {type_id}, which is no known GGUF "
                f"tensor type (gguf {gguf_version()})"
            ) from None
        if qtype not in SUPPORTED:
            raise ConfigError(
                f"{src}: tensor {name} is {qtype.name}, which ftx convert does not read (it "
                f"reads {', '.join(q.name for q in SUPPORTED)}); requantize it with "
                "llama-quantize, e.g. to Q4_K_M or Q8_0"
            )
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        if dims[0] % block:
            raise ValueError(f"tensor {name}: rows of {dims[0]} values are not whole blocks")
        n_bytes = math.prod(dims) // block * size
        if name in tensors:
            raise ValueError(f"tensor {name} appears twice")
        c.pos = start + offset
        at = c.take(n_bytes)
        data = np.frombuffer(buf, np.uint8, n_bytes, at)
        tensors[name] = RawTensor(name, qtype, tuple(reversed(dims)), data)
    return GGUFFile(src, meta, tensors)
