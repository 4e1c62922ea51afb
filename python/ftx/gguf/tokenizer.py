"""Hugging Face ``tokenizer.json`` and ``tokenizer_config.json`` from GGUF ``tokenizer.*`` keys.

The files are written as plain JSON (no ``tokenizers`` import) and reproduce llama.cpp's own
tokenization, which is the reference for what a GGUF model was run with: SentencePiece-style
vocabularies (``llama``) become a BPE whose merges are ranked by the merged piece's score, with
byte fallback; GPT-2-style vocabularies (``gpt2``) become a byte-level BPE behind the
pre-tokenizer regexes that llama.cpp uses for ``tokenizer.ggml.pre``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ftx.errors import ConfigError

# llama.cpp token types (``tokenizer.ggml.token_type``).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPACE = "\u2581"  # SentencePiece's visible space

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _char_class(ranges: str) -> str:
    """A regex class from hex code point ranges ("41-5A B5"), as Oniguruma ``\\x{..}`` escapes.

    Code points rather than literal characters: source normalization would change some of them.
    """
    parts = []
    for r in ranges.split():
        lo, _, hi = r.partition("-")
        parts.append(f"\\x{{{lo}}}-\\x{{{hi or lo}}}")
    return "[" + "".join(parts) + "]"


# The letters of deepseek-llm's own tokenizer.json, as llama.cpp's llama-vocab.cpp copies them.
_DEEPSEEK_LETTERS = _char_class(
    "41-5A 61-7A B5 C0-D6 D8-F6 F8-1BA 1BC-1BF 1C4-293 295-2AF 370-373 376-377 37B-37D 37F "
    "386 388-38A 38C 38E-3A1 3A3-3F5 3F7-481 48A-52F 531-556 10A0-10C5 13A0-13F5 13F8-13FD "
    "1C90-1CBA 1CBD-1CBF 1D00-1D2B 1D6B-1D77 1D79-1D9A 1E00-1F15 1F18-1F1D 1F20-1F45 "
    "1F48-1F4D 1F50-1F57 1F59 1F5B 1F5D 1F5F-1F7D 1F80-1FB4 1FB6-1FBC 1FBE 1FC2-1FC4 "
    "1FC6-1FCC 1FD0-1FD3 1FD6-1FDB 1FE0-1FEC 1FF2-1FF4 1FF6-1FFC 2102 2107 210A-2113 2115 "
    "2119-211D 2124 2126 2128 212A-212D 212F-2134 2139 213C-213F 2145-2149 214E 2183-2184 "
    "2C00-2C7B 2C7E-2CE4 2CEB-2CEE 2CF2-2CF3 A640-A66D A680-A69B A722-A76F A771-A787 "
    "A78B-A78E AB70-ABBF FB00-FB06 FB13-FB17 FF21-FF3A FF41-FF5A 10400-1044F 104B0-104D3 "
    "104D8-104FB 10C80-10CB2 10CC0-10CF2 118A0-118DF 1E900-1E943"
)
_DEEPSEEK_PUNCT = _char_class("21-2F 3A-7E FF01-FF0F FF1A-FF5E 2018-201F 3000-3002")
_CJK = _char_class("4E00-9FA5 800-4E00 AC00-D7FF")


# tokenizer.ggml.pre -> the regexes llama.cpp applies one after the other (llama-vocab.cpp,
# llm_tokenizer_bpe), each splitting the pieces the previous one left.
_PRE_REGEXES: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"),
    "llama3": (_LLAMA3,),
    "dbrx": (_LLAMA3,),
    "smaug-bpe": (_LLAMA3,),
    "chatglm-bpe": (_LLAMA3,),
    "glm4": (_LLAMA3,),
    "gpt-2": (_GPT2,),
    "phi-2": (_GPT2,),
    "mpt": (_GPT2,),
    "olmo": (_GPT2,),
    "jais": (_GPT2,),
    "starcoder": (r"\p{N}", _GPT2),
    "refact": (r"\p{N}", _GPT2),
    "command-r": (r"\p{N}", _GPT2),
    "smollm": (r"\p{N}", _GPT2),
    "codeshell": (r"\p{N}", _GPT2),
    "exaone": (r"\p{N}", _GPT2),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"),
    "qwen2": (_QWEN2,),
    "stablelm2": (_QWEN2,),
    "deepseek-r1-qwen": (_QWEN2,),
    "deepseek-llm": (
        "[\r\n]",
        rf"\s?{_DEEPSEEK_LETTERS}+",
        rf"\s?{_DEEPSEEK_PUNCT}+",
        r"\s+$",
        f"{_CJK}+",
        r"\p{N}+",
    ),
    "deepseek-coder": ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", f"{_CJK}+", r"\p{N}"),
}
_PRE_ALIASES = {"llama-bpe": "llama3", "llama-v3": "llama3", "falcon3": "llama3"}
# Pre-tokenizers after which llama.cpp looks a whole piece up before merging (ignore_merges).
_WHOLE_WORD_FIRST = {"llama3"}
# llama.cpp's clean_up_tokenization_spaces is off for these (and for every SentencePiece vocab).
_NO_CLEAN_SPACES = {"deepseek-llm", "deepseek-coder", "command-r", "qwen2", "smollm"}
# Tokens that end a turn, whatever the eos id says (llama.cpp's end-of-generation list).
_END_OF_TURN = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>",  # DeepSeek's, with full-width bars
}


def supported_pre_tokenizers() -> list[str]:
    return sorted([*_PRE_REGEXES, *_PRE_ALIASES])


class GGUFVocab:
    """The ``tokenizer.*`` keys of one GGUF file, checked and with llama.cpp's defaults."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self.kind = str(meta.get("tokenizer.ggml.model", ""))
        if self.kind not in ("llama", "gpt2"):
            raise ConfigError(
                f"tokenizer.ggml.model = {self.kind!r}: only 'llama' (SentencePiece) and "
                "'gpt2' (byte-level BPE) vocabularies can be converted"
            )
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ConfigError("tokenizer.ggml.tokens is missing: the file has no vocabulary")
        # llama.cpp renames empty tokens the same way, so ids keep their meaning.
        self.tokens = [str(t) if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        n = len(self.tokens)
        self.types = [int(t) for t in meta.get("tokenizer.ggml.token_type", [NORMAL] * n)]
        self.scores = [float(s) for s in meta.get("tokenizer.ggml.scores", [0.0] * n)]
        self.merges = [str(m) for m in meta.get("tokenizer.ggml.merges", [])]
        self.pre_name = str(meta.get("tokenizer.ggml.pre", "default"))
        self.pre = _PRE_ALIASES.get(self.pre_name, self.pre_name)
        self.name = str(meta.get("general.name", ""))
        spm = self.kind == "llama"
        self.add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", spm))
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", spm or self.pre == "llama3"))
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        self.bos = _token_id(meta, "bos", n, 1 if spm else None)
        self.eos = _token_id(meta, "eos", n, 2 if spm else None)
        self.unk = _token_id(meta, "unknown", n, 0 if spm else None)
        self.pad = _token_id(meta, "padding", n, None)
        self.eot = _token_id(meta, "eot", n, None)
        self.chat_template = meta.get("tokenizer.chat_template")
        self.context_length = _arch_value(meta, "context_length")
        if len(set(self.tokens)) != n:
            raise ConfigError("tokenizer.ggml.tokens has duplicate tokens")
        if self.add_bos and self.bos is None:
            raise ConfigError("tokenizer.ggml.add_bos_token is set but there is no bos token id")

    def text(self, i: int | None) -> str | None:
        return None if i is None else self.tokens[i]

    def end_of_turn_ids(self) -> list[int]:
        """The eos id first, then every other token that ends generation in llama.cpp."""
        ids = [i for i in (self.eos, self.eot) if i is not None]
        ids += [
            i
            for i, t in enumerate(self.tokens)
            if t in _END_OF_TURN and self.types[i] == CONTROL and i not in ids
        ]
        return ids


def _token_id(meta: Mapping[str, Any], name: str, n: int, default: int | None) -> int | None:
    value = meta.get(f"tokenizer.ggml.{name}_token_id", default)
    # llama.cpp ignores ids outside the vocabulary instead of failing.
    return int(value) if value is not None and 0 <= int(value) < n else default


def _arch_value(meta: Mapping[str, Any], key: str) -> Any:
    return meta.get(f"{meta.get('general.architecture', '')}.{key}")


def tokenizer_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``tokenizer.json`` for the vocabulary in ``meta``."""
    v = GGUFVocab(meta)
    body = _spm(v) if v.kind == "llama" else _byte_level(v)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(v),
        **body,
        "post_processor": _post_processor(v),
    }


def tokenizer_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``tokenizer_config.json``: special tokens, BOS/EOS policy, chat template."""
    v = GGUFVocab(meta)
    pad = v.pad if v.pad is not None else v.eos
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": v.text(v.bos),
        "eos_token": v.text(v.eos),
        "unk_token": v.text(v.unk),
        "pad_token": v.text(pad),
        "add_bos_token": v.add_bos,
        "add_eos_token": v.add_eos,
        "clean_up_tokenization_spaces": v.kind == "gpt2" and v.pre not in _NO_CLEAN_SPACES,
    }
    if v.context_length is not None:
        config["model_max_length"] = int(v.context_length)
    if v.chat_template:
        config["chat_template"] = str(v.chat_template)
    return config


def _added_tokens(v: GGUFVocab) -> list[dict[str, Any]]:
    # llama.cpp strips the whitespace after Phi-3's special tokens, as Phi-3's own tokenizer does.
    phi3 = "phi-3" in v.name.lower() or "phi3" in v.name.lower()
    out = []
    for i, (text, kind) in enumerate(zip(v.tokens, v.types, strict=True)):
        if kind not in (UNKNOWN, CONTROL, USER_DEFINED):
            continue
        rstrip = phi3 and text not in ("<unk>", "<s>", "<|endoftext|>")
        out.append(
            {
                "id": i,
                "content": text,
                "single_word": False,
                "lstrip": False,
                "rstrip": rstrip,
                "normalized": False,
                "special": kind != USER_DEFINED,
            }
        )
    return out


def _spm(v: GGUFVocab) -> dict[str, Any]:
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    normalizer: dict[str, Any] = replace
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if v.add_space_prefix:
        # llama.cpp puts a space before every run of text that starts the input or follows a
        # special token; a normalizer runs on exactly those runs.
        normalizer = {
            "type": "Sequence",
            "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace],
        }
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": v.text(v.unk),
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(v.tokens)},
            "merges": spm_merges(v.tokens, v.scores),
        },
        "decoder": {"type": "Sequence", "decoders": decoders},
    }


def spm_merges(tokens: Sequence[str], scores: Sequence[float]) -> list[list[str]]:
    """Every split of a token into two tokens, best merged score first.

    llama.cpp's SentencePiece tokenizer repeatedly merges the adjacent pair whose concatenation
    is the highest-scoring token; a BPE ranked by that score makes the same choices.
    """
    ids = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for i, token in enumerate(tokens):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], i, cut, left, right))
    ranked.sort()
    return [[left, right] for *_, left, right in ranked]


def _byte_level(v: GGUFVocab) -> dict[str, Any]:
    pre = v.pre
    if pre not in _PRE_REGEXES:
        raise ConfigError(
            f"tokenizer.ggml.pre = {v.pre_name!r} is not supported; supported: "
            + ", ".join(supported_pre_tokenizers())
        )
    splits: list[dict[str, Any]] = [
        {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
        for r in _PRE_REGEXES[pre]
    ]
    splits.append(
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    )
    merges = []
    for m in v.merges:
        # llama.cpp splits at the first space after the first character.
        cut = m.find(" ", 1)
        if cut < 0:
            raise ConfigError(f"tokenizer.ggml.merges has a malformed entry {m!r}")
        merges.append([m[:cut], m[cut + 1 :]])
    return {
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": splits},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": pre in _WHOLE_WORD_FIRST,
            "vocab": {t: i for i, t in enumerate(v.tokens)},
            "merges": merges,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
    }


def _post_processor(v: GGUFVocab) -> dict[str, Any] | None:
    """Adds BOS/EOS on ``add_special_tokens=True`` exactly when llama.cpp would."""
    bos = v.bos if v.add_bos else None
    eos = v.eos if v.add_eos else None
    if bos is None and eos is None:
        return None
    ends = [i for i in (bos, eos) if i is not None]

    def piece(seq: str) -> list[dict[str, Any]]:
        head = [{"SpecialToken": {"id": v.tokens[bos], "type_id": 0}}] if bos is not None else []
        tail = [{"SpecialToken": {"id": v.tokens[eos], "type_id": 0}}] if eos is not None else []
        return [*head, {"Sequence": {"id": seq, "type_id": 0}}, *tail]

    return {
        "type": "TemplateProcessing",
        "single": piece("A"),
        "pair": piece("A") + piece("B"),
        "special_tokens": {
            v.tokens[i]: {"id": v.tokens[i], "ids": [i], "tokens": [v.tokens[i]]} for i in ends
        },
    }
