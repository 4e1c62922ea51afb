"""Checks of the model folder, the prepared data and the run folder, before anything loads.

Reads only small files: ``config.json``, the JSON headers of the safetensors files, the
artifact's manifest, and the bytes of ``tokenizer.json`` (for its sha256).
"""

from __future__ import annotations

import gzip
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.config import TrainConfig
from ftx.data import Manifest, model_tokenizer_sha256, read_manifest
from ftx.errors import ConfigIssues, DataError, Issue
from ftx.run_folder import RUN_FORMAT, RUN_MANIFEST
from ftx.training.trackers import missing

GZIP_MAGIC = b"\x1f\x8b"
# Weight names inside a block: model.layers.3.self_attn.q_proj.weight -> (3, self_attn.q_proj).
BLOCK_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.(?:weight|scales)$")
# The input embedding's weight in the architectures mlx-lm loads.
EMBEDDING = re.compile(r"(?:^|\.)(?:embed_tokens|wte|tok_embeddings|word_embeddings)\.weight$")


@dataclass(frozen=True)
class Inputs:
    """What the preflight learned and training needs."""

    model_config: dict[str, Any]
    weight_files: list[Path]
    num_layers: int
    block_modules: frozenset[str]
    tokenizer_sha256: str
    manifest: dict[str, Any]
    splits: tuple[str, ...]
    # rows of the input embedding: every token id must be below it
    embedding_rows: int | None = None


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


def embedding_rows(weights: list[Path], config: dict[str, Any]) -> int | None:
    """Rows of the model's input embedding, from the safetensors headers (``vocab_size`` of
    config.json where no embedding weight is found)."""
    for f in weights:
        for name, shape in safetensors_shapes(f).items():
            if EMBEDDING.search(name) and shape:
                return int(shape[0])
    size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return int(size) if isinstance(size, int) else None


def model_embedding_rows(folder: Path) -> int | None:
    """``embedding_rows`` of a model folder."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    return embedding_rows(sorted(folder.glob("model*.safetensors")), config)


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


def is_run_folder(path: Path) -> bool:
    """A folder ``ftx train`` made (it resumes there); anything else is never written into."""
    try:
        manifest = json.loads((path / RUN_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == RUN_FORMAT


def _model_issues(folder: Path) -> tuple[list[Issue], dict[str, Any], list[Path]]:
    if not folder.is_dir():
        return [Issue("model", str(folder), "a local model folder; it does not exist")], {}, []
    issues = []
    config: dict[str, Any] = {}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        issues.append(Issue("model", str(folder), f"a folder with a readable config.json ({e})"))
    if not isinstance(config, dict):
        issues.append(Issue("model", str(folder), "a config.json that is a JSON object"))
        config = {}
    if config and "model_type" not in config:
        issues.append(Issue("model", str(folder), "config.json must name its model_type"))
    weights = sorted(folder.glob("model*.safetensors"))
    if not weights:
        issues.append(Issue("model", str(folder), "a folder with model*.safetensors weights"))
    if not (folder / "tokenizer.json").is_file():
        issues.append(Issue("model", str(folder), "a folder with tokenizer.json"))
    return issues, config, weights


# Where config.json states how many positions the model was trained for, by architecture family
# (llama, qwen, mistral, gemma, phi: max_position_embeddings; gpt2-style: n_positions).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def position_limit(model_config: dict[str, Any]) -> tuple[str, int] | None:
    """The model's longest sequence and the config.json key that says it (multimodal configs
    nest the language model's under ``text_config``); None where the config does not say."""
    for scope in (model_config, model_config.get("text_config")):
        if isinstance(scope, dict):
            for key in POSITION_KEYS:
                value = scope.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return key, value
    return None


def check_inputs(config: TrainConfig) -> Inputs:
    """Every check that can fail before the model loads, all reported at once."""
    issues, model_config, weights = _model_issues(Path(config.model))
    manifest: Manifest | None = None
    try:
        manifest = read_manifest(config.data)
    except (DataError, FileNotFoundError) as e:
        issues.append(Issue("data", str(config.data), f"an artifact of `ftx prepare` ({e})"))
    splits = manifest.nonempty_splits() if manifest else ()
    if manifest and "train" not in splits:
        issues.append(Issue("data", str(config.data), "an artifact with a non-empty train split"))
    if config.eval_every is not None and manifest and "valid" not in splits:
        issues.append(Issue("eval_every", config.eval_every, "the artifact has no valid split"))

    sha = model_tokenizer_sha256(Path(config.model)) or ""
    if manifest and (why := manifest.check_tokenizer(Path(config.model))):
        issues.append(
            Issue("data", str(config.data), f"data tokenized with the model's tokenizer; {why}")
        )

    modules: set[str] = set()
    layers: set[int] = set()
    shapes: dict[Path, dict[str, list[int]]] = {}
    for f in weights:
        try:
            shapes[f] = safetensors_shapes(f)
        except DataError as e:
            issues.append(Issue("model", str(config.model), f"readable weights ({e})"))
    for f in shapes:
        for name, shape in shapes[f].items():
            if m := BLOCK_WEIGHT.search(name):
                layers.add(int(m.group(1)))
                if len(shape) == 2:  # linear layers (norms are 1-D)
                    modules.add(m.group(2))
    if config.num_layers is not None and layers and config.num_layers > len(layers):
        issues.append(
            Issue("num_layers", config.num_layers, f"at most {len(layers)}, the model's blocks")
        )
    for target in config.target_modules or []:
        if modules and target not in modules:
            issues.append(
                Issue("target_modules", target, f"a linear layer of the blocks: {sorted(modules)}")
            )
    rows = embedding_rows(list(shapes), model_config) if shapes else None
    top = tokenizer_max_id(Path(config.model) / "tokenizer.json")
    if rows is not None and top is not None and top >= rows:
        issues.append(
            Issue(
                "model",
                str(config.model),
                f"an embedding with a row for every token: it has {rows} rows, but its "
                f"tokenizer.json has ids up to {top}",
            )
        )
    if (limit := position_limit(model_config)) and config.max_seq_length > limit[1]:
        # Positions past the limit have no trained RoPE angle or position row: the loss would
        # train on positions the model never saw, or index past its position table.
        issues.append(
            Issue(
                "max_seq_length",
                config.max_seq_length,
                f"at most {limit[1]}, the model's {limit[0]} (config.json)",
            )
        )
    if config.quantize is not None and "quantization" in model_config:
        issues.append(Issue("quantize", config.quantize, "the base is already quantized"))

    issues += missing(config.report_to)

    out = Path(config.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_run_folder(out))):
        issues.append(
            Issue("out", str(out), "a new or empty folder, or an ftx run folder to resume")
        )
    if issues:
        raise ConfigIssues("configuration", issues)
    return Inputs(
        model_config=model_config,
        weight_files=weights,
        num_layers=len(layers),
        block_modules=frozenset(modules),
        tokenizer_sha256=sha,
        manifest=manifest.raw if manifest else {},
        splits=splits,
        embedding_rows=rows,
    )
