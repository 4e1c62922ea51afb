"""ftx's masks from plain templates equal transformers' assistant_masks from TRL's training twins.

Every difference must be one of the documented rules of ``explain_mask_difference`` (tokens TRL
trains that the model never writes: the newline after the end-of-turn token, the generation
prompt's tail), and every record ftx rejects must be explained (the template drops tool calls, or
refuses the record in transformers too). Families whose tokenizer is not in the shared data are
checked with Qwen3's BPE plus their turn markers as special tokens (``_standin``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from parity_checks import load

LIMIT = 8


def _names() -> list[str]:
    # The list is read without importing transformers (collection must stay cheap).
    return sorted(load().MASK_TOKENIZERS)


def test_every_training_twin_is_checked_or_has_a_reason(parity: ModuleType) -> None:
    pairs = set(parity.training_pairs())
    assert len(pairs) >= 20
    assert pairs == set(parity.MASK_TOKENIZERS) | set(parity.MASK_UNSUPPORTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", _names())
def test_masks_equal_trl_assistant_masks(parity: ModuleType, models: Path, name: str) -> None:
    family = parity.MASK_TOKENIZERS[name]
    if family.tokenizer.startswith("gguf"):
        pytest.importorskip("ftx.gguf.tokenizer", reason="the GGUF converter is not merged yet")
        pytest.importorskip("gguf")
    outcomes = parity.compare_masks(name, parity.MASK_DATASETS, models, limit=LIMIT)
    problems = [f"{m.dataset}: {m.unexplained[:3]}" for m in outcomes if m.unexplained]
    assert not problems, "\n".join(problems)
    assert sum(m.compared for m in outcomes) >= LIMIT
