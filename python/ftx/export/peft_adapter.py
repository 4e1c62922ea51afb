"""An mlx-lm adapter as a PEFT LoRA / DoRA adapter (``adapter_model.safetensors`` +
``adapter_config.json``), for transformers/PEFT, vLLM and the rest of the PyTorch world.

Conventions differ in two places. Orientation: mlx-lm computes ``x @ lora_a @ lora_b`` with
``lora_a`` [in, r] and ``lora_b`` [r, out]; PEFT stores ``lora_A.weight`` [r, in] and
``lora_B.weight`` [out, r] (torch Linear layout), so both are transposed. Scale: mlx-lm
multiplies by ``scale`` itself, PEFT by ``lora_alpha / r`` (``use_rslora`` off), so
``lora_alpha = scale * r``. DoRA's magnitude ``m`` (one per output row, the same
renormalisation in both) becomes ``lora_magnitude_vector``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

from ftx.errors import ConfigError
from ftx.export.merge import adapter_layers

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."
BLOCK = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(.+)$")


def peft_tensors(model: nn.Module) -> dict[str, mx.array]:
    tensors: dict[str, mx.array] = {}
    for name, layer in adapter_layers(model):
        key = PREFIX + name
        tensors[f"{key}.lora_A.weight"] = layer.lora_a.T
        tensors[f"{key}.lora_B.weight"] = layer.lora_b.T
        if "m" in layer:
            tensors[f"{key}.lora_magnitude_vector"] = layer.m
    return tensors


def peft_config(model: nn.Module, adapter_config: dict[str, Any], base_name: str) -> dict[str, Any]:
    kind = adapter_config.get("fine_tune_type", "lora")
    if kind == "full":
        raise ConfigError("format = peft: a full fine-tune has no adapter; fuse it instead")
    params = adapter_config["lora_parameters"]
    rank = int(params["rank"])
    alpha = float(params["scale"]) * rank
    targets: set[str] = set()
    blocks: set[int] = set()
    for name, _ in adapter_layers(model):
        if m := BLOCK.match(name):
            blocks.add(int(m.group(1)))
            targets.add(m.group(2))
        else:
            targets.add(name)
    every_block = blocks == set(range(len(model.layers)))
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": rank,
        "lora_alpha": int(alpha) if alpha.is_integer() else alpha,
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": sorted(targets),
        "layers_to_transform": None if every_block else sorted(blocks),
        "layers_pattern": None if every_block else "layers",
        "use_dora": kind == "dora",
        "use_rslora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def write_peft(
    folder: Path, model: nn.Module, adapter_config: dict[str, Any], base_name: str
) -> tuple[int, str]:
    """Writes the two PEFT files, tensors in the dtype they were trained in; returns the
    number of adapted layers and that dtype."""
    config = peft_config(model, adapter_config, base_name)
    tensors = peft_tensors(model)
    mx.save_safetensors(str(folder / PEFT_WEIGHTS), tensors, metadata={"format": "pt"})
    (folder / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    dtypes = sorted({str(v.dtype).removeprefix("mlx.core.") for v in tensors.values()})
    return len(adapter_layers(model)), "/".join(dtypes)
