"""Model folders that ftx and transformers both load, made from the tokenizers beside the repo:
as published, from GGUF metadata, or a stand-in (Qwen3's BPE plus a template's turn markers)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .common import TOK, TRL, Family


def _gguf_metadata(path: Path) -> dict[str, Any]:
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        raw = Path(d) / path.name.removesuffix(".gz")
        with gzip.open(path) as src, raw.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        reader = gguf.GGUFReader(raw)
        meta: dict[str, Any] = {}
        for name, f in reader.fields.items():
            if not name.startswith(("tokenizer.", "general.")):
                continue
            if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
                values = [f.parts[i] for i in f.data]
                if f.types[-1] == gguf.GGUFValueType.STRING:
                    meta[name] = [bytes(v).decode("utf-8") for v in values]
                else:
                    meta[name] = [v.tolist()[0] for v in values]
            elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
                meta[name] = bytes(f.parts[f.data[0]]).decode("utf-8")
            else:
                meta[name] = np.asarray(f.parts[f.data[0]]).tolist()[0]
    return meta


def model_dir(family: Family, root: Path) -> Path:
    """A model folder for ``family`` under ``root`` (made once), with a plain tokenizer.json."""
    key = family.tokenizer.replace("/", "_").replace(":", "_")
    out = root / key
    if out.is_dir():
        return out
    tmp = root / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if family.tokenizer.startswith("standin:"):
        _standin(family.tokenizer.removeprefix("standin:"), tmp)
    elif family.tokenizer.startswith("gguf"):
        # The converter lives on the `convert` branch; until it is merged these families skip.
        from ftx.gguf import tokenizer as gguf_tokenizer

        kind, rel = family.tokenizer.split(":", 1)
        if kind == "gguf-meta":
            with gzip.open(TOK / rel, "rt", encoding="utf-8") as f:
                meta = json.load(f)
        else:
            meta = _gguf_metadata(TOK / rel)
        config = gguf_tokenizer.tokenizer_config(meta)
        (tmp / "tokenizer.json").write_text(json.dumps(gguf_tokenizer.tokenizer_json(meta)))
        if family.template is None and family.name == "smollm2":
            config["chat_template"] = (TOK / "smollm2" / "chat_template.jinja").read_text()
        (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        src = TOK / family.tokenizer
        if (src / "tokenizer.json").exists():
            shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
        else:
            with (
                gzip.open(src / "tokenizer.json.gz") as g,
                (tmp / "tokenizer.json").open("wb") as o,
            ):
                shutil.copyfileobj(g, o)
        config = json.loads((src / "tokenizer_config.json").read_text())
        if config.get("tokenizer_class") == "LlamaTokenizer" and config.get("legacy"):
            # transformers 5 rebuilds a LlamaTokenizer from vocab and merges with its own
            # Metaspace pre-tokenizer and ignores `legacy: true`, so "<s> [INST]" loses the "▁"
            # the published tokenizer.json (and SentencePiece's legacy mode) put before " [".
            # The oracle must tokenize with the tokenizer as published, as ftx does.
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        (tmp / "tokenizer_config.json").write_text(json.dumps(config))
    tmp.rename(out)
    return out


# The EOS of the real tokenizers of the stand-in families (their tokenizer_config.json).
STANDIN_EOS = {
    "cohere": "<|END_OF_TURN_TOKEN|>",
    "cohere2": "<|END_OF_TURN_TOKEN|>",
    "deepseekv3": "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "glm4moe": "<|endoftext|>",
    "gptoss": "<|return|>",
    "lfm2": "<|im_end|>",
    "nemotron_3_nano": "<|im_end|>",
    "nemotron_3_super": "<|im_end|>",
    "nemotron_3_ultra": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
}


def _standin(trl_name: str, out: Path) -> None:
    """Qwen3's BPE with the turn markers of a TRL template added as special tokens, for the
    families whose tokenizer is not here (Gemma, Cohere, DeepSeek, GLM, gpt-oss, LFM2, ...):
    masks depend on where the template's text and special tokens are, not on the vocabulary."""
    source = (TRL / f"{trl_name}.jinja").read_text() + (
        TRL / f"{trl_name}_training.jinja"
    ).read_text()
    bar = "\uff5c"  # DeepSeek's fullwidth bar
    pattern = rf"<\|[^<>|\s]+\|>|<[a-z_]+_of_turn>|<{bar}[^<>]+?{bar}>|<\|[a-z_]+>|<[a-z_]+\|>"
    markers = sorted(set(re.findall(pattern, source)))
    with gzip.open(TOK / "qwen3" / "tokenizer.json.gz", "rt", encoding="utf-8") as f:
        tj = json.load(f)
    known = {t["content"]: t for t in tj["added_tokens"]}
    next_id = max(t["id"] for t in tj["added_tokens"]) + 1
    eos = STANDIN_EOS.get(trl_name, "<eos>")
    for m in [*markers, "<bos>", eos]:
        if m in known:
            known[m]["special"] = True
            continue
        tj["added_tokens"].append(
            {
                "id": next_id,
                "content": m,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
        next_id += 1
    (out / "tokenizer.json").write_text(json.dumps(tj))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": eos,
        "add_bos_token": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
