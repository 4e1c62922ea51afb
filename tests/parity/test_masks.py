"""ftx's masks from plain templates equal transformers' assistant_masks from TRL's training twins.

Every difference must be one of the documented rules in ``explain_mask_difference`` (the newline
TRL trains after the end-of-turn token, and the one ending Qwen2.5's assistant header).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

LIMIT = 25


def test_every_training_twin_is_checked_or_has_no_tokenizer(parity: ModuleType) -> None:
    pairs = parity.training_pairs()
    assert len(pairs) >= 20
    assert {"qwen2_5", "qwen3", "llama3"} <= set(pairs) & set(parity.MASK_TOKENIZERS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "qwen2_5",
        "qwen3",
        "qwen3_instruct_2507",
        "qwen3_5_nothink",
        "qwen3_5_think",
        "qwen3_6",
        "llama3",
        "phi3",
        "phi3_5",
    ],
)
def test_masks_equal_trl_assistant_masks(parity: ModuleType, models: Path, name: str) -> None:
    family = parity.MASK_TOKENIZERS[name]
    if family.tokenizer.startswith("gguf"):
        pytest.importorskip("ftx.gguf_tokenizer", reason="the GGUF converter is not merged yet")
        pytest.importorskip("gguf")
    outcomes = parity.compare_masks(name, parity.MASK_DATASETS, models, limit=LIMIT)
    problems = [f"{m.dataset}: {m.unexplained[:3]}" for m in outcomes if m.unexplained]
    assert not problems, "\n".join(problems)
    assert sum(m.compared for m in outcomes) >= LIMIT * 2
