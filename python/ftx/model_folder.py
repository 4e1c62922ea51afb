"""A Hugging Face model folder as downloaded: the ``tokenizer.json`` it is read with, and
whether its tokenizer, ``config.json`` and weights belong together.

The Rust engine reads only ``tokenizer.json``. A folder that ships only SentencePiece's
``tokenizer.model`` (Mistral v0.1-v0.3, Llama 2 and the like) is converted once, by
transformers' ``TokenizersBackend``, which builds the tokenizer from the SentencePiece model's
own settings, so it encodes like ``SentencePieceProcessor.encode``. (Its model-specific
``LlamaTokenizer`` does not: it splits runs of spaces differently.) The result is a new
``tokenizer.json`` in the folder, created next to the files it was made from and never
written over one; where the folder cannot be written, a cache folder holds it with copies of
the tokenizer's other files, named by the sha256 of all of them and the transformers version.
``prepare``, ``inspect``, ``evaluate`` and the others then read the same file, and ``train``'s
check of the tokenizer finds it.

Reads only small files (``config.json``, the safetensors headers, the tokenizer's JSON) and
imports transformers only to convert. No MLX.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ftx.errors import ConfigError, DataError, FtxIOError, TokenizerError
from ftx.files import fsync_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.json.gz")
SENTENCEPIECE = "tokenizer.model"
# What the engine and transformers read of a tokenizer besides its vocabulary: copied beside a
# converted tokenizer.json in the cache, so that folder reads as the model's would.
TOKENIZER_SIDE_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
INDEX = "model.safetensors.index.json"
GZIP_MAGIC = b"\x1f\x8b"
# Why a folder cannot take a new file: not ours to write (a shared or system download) or a
# read-only mount.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def has_tokenizer_json(folder: Path) -> bool:
    return any((folder / n).is_file() for n in TOKENIZER_FILES)


def tokenizer_folder(
    model: Path, *, convert: bool = True, say: Callable[[str], object] = lambda _: None
) -> Path:
    """The folder whose ``tokenizer.json`` and tokenizer files stand for ``model``'s: the
    folder itself, or, when it has only ``tokenizer.model``, where its conversion is (made
    now unless ``convert`` is false; ``say`` hears where it was written)."""
    if has_tokenizer_json(model) or not (model / SENTENCEPIECE).is_file():
        return model
    cached = _cache_folder(model)
    if (cached / "tokenizer.json").is_file():
        return cached
    if not convert:
        return model
    text = _convert(model)
    try:
        _create(model / "tokenizer.json", text)
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise FtxIOError(f"{model / 'tokenizer.json'}: cannot write ({e.strerror or e})") from e
        _publish_cache(model, cached, text)
        say(f"{model} cannot be written: its tokenizer.model converted to {cached}/tokenizer.json")
        return cached
    say(f"{model / SENTENCEPIECE} converted to {model / 'tokenizer.json'}")
    return model


def tokenizer_json(model: Path) -> Path | None:
    """The ``tokenizer.json`` (or ``.json.gz``) ``model`` is read with, None when it has none
    yet (an unconverted ``tokenizer.model`` is converted by the first ``tokenizer_folder``)."""
    folder = tokenizer_folder(model, convert=False)
    return next((folder / n for n in TOKENIZER_FILES if (folder / n).is_file()), None)


def _cache_folder(model: Path) -> Path:
    from ftx.default_model import cache_dir

    h = hashlib.sha256()
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        version = "none"
    h.update(f"transformers {version}\n".encode())
    for name in (SENTENCEPIECE, *TOKENIZER_SIDE_FILES):
        if (model / name).is_file():
            h.update(f"{name} {(model / name).stat().st_size}\n".encode())
            h.update((model / name).read_bytes())
    return cache_dir() / "tokenizers" / h.hexdigest()


def _convert(model: Path) -> str:
    source = model / SENTENCEPIECE
    # transformers announces on import that it found no PyTorch, which the conversion never
    # needs: the user would read it as something gone wrong.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # the converter parses the model with sentencepiece's protobuf schema
    needed = ("transformers", "sentencepiece", "google.protobuf")
    if missing := [name for name in needed if not _installed(name)]:
        raise TokenizerError(
            f"{source}: the folder has no tokenizer.json, and converting its SentencePiece "
            f"model needs {', '.join(missing)}; install them with pip install "
            "'ftx[sentencepiece]'"
        )
    from transformers import TokenizersBackend

    try:
        tokenizer = TokenizersBackend.from_pretrained(str(model))
        return str(tokenizer.backend_tokenizer.to_str())
    except Exception as e:  # transformers raises what its parsers raise; each names the problem
        raise TokenizerError(f"{source}: not a SentencePiece model ftx can convert ({e})") from e


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def _create(path: Path, text: str) -> None:
    """Writes ``path`` as a new file, whole or not at all, and never over an existing one (a
    concurrent converter's is kept: both come from the same files)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
            fsync_path(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def _publish_cache(model: Path, cached: Path, text: str) -> None:
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
        try:
            (staging / "tokenizer.json").write_text(text, encoding="utf-8")
            for name in TOKENIZER_SIDE_FILES:
                if (model / name).is_file():
                    shutil.copyfile(model / name, staging / name)
            (staging / "source.txt").write_text(f"{model.resolve()}\n", encoding="utf-8")
            try:
                os.rename(staging, cached)
            except OSError:
                if not (cached / "tokenizer.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        raise FtxIOError(f"{cached}: cannot write ({e.strerror or e})") from e


# ---- whether the tokenizer, config.json and the weights are of one model ----------------------

# The input embedding's weight in the architectures mlx-lm loads.
EMBEDDING_NAMES = ("embed_tokens", "wte", "tok_embeddings", "word_embeddings")


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header (8-byte length, then JSON); no tensor is read.
    A file that is not one, or shorter than its header says (a cut-off download), is a
    DataError naming it, before MLX would fail on it."""
    try:
        total = path.stat().st_size
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > total - 8:
                raise ValueError(f"a header of {size} bytes in a file of {total}")
            header: dict[str, Any] = json.loads(f.read(size))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
        shapes = {k: [int(d) for d in v["shape"]] for k, v in tensors.items()}
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{path}: not a readable safetensors file ({e})") from e
    if 8 + size + end != total:
        raise DataError(
            f"{path}: {total} bytes, but its header describes {8 + size + end}: the file is cut "
            "off or damaged; download or write it again"
        )
    return shapes


def is_embedding(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in EMBEDDING_NAMES


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files mlx-lm loads (``model*.safetensors``); a shard named by
    ``model.safetensors.index.json`` that is missing is a DataError naming it."""
    files = sorted(folder.glob("model*.safetensors"))
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({str(f) for f in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{index}: not a safetensors index with a weight_map ({e})") from e
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise DataError(
                f"{index}: names {len(shards)} shards, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not in {folder}; download it again"
            )
    return files


def embedding_shape(weights: list[Path]) -> tuple[Path, str, int] | None:
    """The file, name and rows of the input embedding in ``weights``' headers."""
    for f in weights:
        for name, shape in safetensors_shapes(f).items():
            if is_embedding(name) and shape:
                return f, name, int(shape[0])
    return None


def config_vocab_size(config: dict[str, Any]) -> int | None:
    """``vocab_size`` of config.json (multimodal configs nest the language model's under
    ``text_config``)."""
    for scope in (config, config.get("text_config")):
        if isinstance(scope, dict):
            size = scope.get("vocab_size")
            if isinstance(size, int) and not isinstance(size, bool):
                return size
    return None


def embedding_rows(weights: list[Path], config: dict[str, Any]) -> int | None:
    """Rows of the model's input embedding, from the safetensors headers (``vocab_size`` of
    config.json where no embedding weight is found)."""
    found = embedding_shape(weights)
    return found[2] if found else config_vocab_size(config)


def read_config(folder: Path) -> dict[str, Any]:
    """config.json, or {} where there is none or it is not a JSON object."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def model_embedding_rows(folder: Path) -> int | None:
    """``embedding_rows`` of a model folder."""
    return embedding_rows(weight_files(folder), read_config(folder))


def tokenizer_max_id(path: Path) -> int | None:
    """The largest id ``tokenizer.json`` can produce (its vocabulary and added tokens)."""
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
        with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
            tok = json.load(f)
        vocab = tok.get("model", {}).get("vocab", {})
        ids = list(vocab.values()) if isinstance(vocab, dict) else [i for i, _ in enumerate(vocab)]
        ids += [t.get("id", 0) for t in tok.get("added_tokens", [])]
        return max((i for i in ids if isinstance(i, int)), default=None)
    except (OSError, ValueError, AttributeError):
        return None


def vocabulary_problems(model: Path, weights: list[Path] | None = None) -> list[str]:
    """Why ``model``'s config.json, weights and tokenizer are not of one model, each naming the
    file and what disagrees: config.json's ``vocab_size`` against the rows of the embedding
    tensor (mlx-lm would refuse the weights), and token ids past the last row (they would
    index out of the embedding). Empty where they agree, or where there are no weights (a
    tokenizer-only folder) to compare with."""
    weights = weight_files(model) if weights is None else weights
    found = embedding_shape(weights)
    if found is None:
        return []
    file, name, rows = found
    problems = []
    size = config_vocab_size(read_config(model))
    if size is not None and size != rows:
        problems.append(
            f"{model / 'config.json'}: vocab_size is {size}, but the embedding {name} in "
            f"{file.name} has {rows} rows: config.json and the weights are of different models"
        )
    tokenizer = tokenizer_json(model)
    top = tokenizer_max_id(tokenizer) if tokenizer else None
    if tokenizer and top is not None and top >= rows:
        problems.append(
            f"{tokenizer}: has token ids up to {top}, but the embedding {name} in {file.name} "
            f"has {rows} rows: the tokenizer is not this model's"
        )
    return problems


def check_vocabulary(model: Path) -> None:
    """``vocabulary_problems`` as one ConfigError (``--model`` names a folder whose parts
    disagree)."""
    try:
        problems = vocabulary_problems(model)
    except DataError as e:
        raise ConfigError(str(e)) from e
    if problems:
        raise ConfigError("; ".join(problems))


def checked_tokenizer_folder(model: Path, say: Callable[[str], object] = lambda _: None) -> Path:
    """``--model`` as ``prepare`` and ``inspect`` read it: its parts checked to agree
    (``check_vocabulary``) before anything is written, then ``tokenizer_folder``."""
    check_vocabulary(model)
    had = has_tokenizer_json(model)
    folder = tokenizer_folder(model, say=say)
    if not had:
        check_vocabulary(model)
    return folder
