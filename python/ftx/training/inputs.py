"""Checks of the model folder, the prepared data and the run folder, before anything loads.

Reads only small files: ``config.json``, the JSON headers of the safetensors files, the
artifact's manifest, and ``tokenizer.json`` (its sha256 and largest id). What the model
folder's parts must agree on is ``ftx.model_folder``'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.config import TrainConfig
from ftx.data import Manifest, model_tokenizer_sha256, read_manifest
from ftx.errors import ConfigIssues, DataError, Issue
from ftx.model_folder import (
    embedding_rows,
    safetensors_shapes,
    tokenizer_json,
    vocabulary_problems,
    weight_files,
)
from ftx.run_folder import RUN_FORMAT, RUN_MANIFEST
from ftx.training.trackers import missing

# Weight names inside a block: model.layers.3.self_attn.q_proj.weight -> (3, self_attn.q_proj).
BLOCK_WEIGHT = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.(?:weight|scales)$")


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
    try:
        weights = weight_files(folder)
    except DataError as e:
        issues.append(Issue("model", str(folder), f"every shard of its weights ({e})"))
        weights = []
    if not weights:
        issues.append(Issue("model", str(folder), "a folder with model*.safetensors weights"))
    if tokenizer_json(folder) is None:
        issues.append(
            Issue(
                "model",
                str(folder),
                "a folder with tokenizer.json (a tokenizer.model alone is converted by "
                "ftx prepare --model, which the data must be prepared with anyway)",
            )
        )
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
    if len(shapes) == len(weights):
        for why in vocabulary_problems(Path(config.model), weights):
            issues.append(Issue("model", str(config.model), f"one model's files; {why}"))
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
