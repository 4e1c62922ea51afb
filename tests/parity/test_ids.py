"""ftx's token ids equal transformers' apply_chat_template(tokenize=True) on real records."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

# Records per dataset compared in CI (the report, python -m tools.parity, compares all of them).
LIMIT = 15

FAMILY_NAMES = [
    "llama3",
    "llama3.1",
    "llama3.2",
    "qwen3",
    "qwen2.5",
    "mistral-v0.1 [INST] v1",
    "mistral-v0.1 [INST] v2v3",
    "mistral-v0.1 [INST] chujiezheng",
    "zephyr",
    "smollm2",
    "phi3",
]


@pytest.mark.slow
@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_ids_equal_transformers_on_every_dataset(
    parity: ModuleType, models: Path, family_name: str
) -> None:
    family = next(f for f in parity.FAMILIES if f.name == family_name)
    if family.tokenizer.startswith("gguf"):
        pytest.importorskip("ftx.gguf.tokenizer", reason="the GGUF converter is not merged yet")
        pytest.importorskip("gguf")
    problems = []
    outcomes = parity.compare_ids(family, parity.DATASETS, models, limit=LIMIT)
    for o in outcomes:
        if o.agree != o.compared:
            problems.append(f"{o.dataset}: {o.agree}/{o.compared} agree: {o.mismatches}")
        if o.rejected_but_rendered:
            problems.append(f"{o.dataset}: rejected but rendered: {o.rejected_but_rendered}")
    assert not problems, "\n".join(problems)
    # Every reject is a record with no answer (BFCL questions, MT-Bench) or one transformers
    # refuses too (the template's raise_exception: no system role, no tool role...): checked
    # above through rejected_but_rendered.
    assert sum(o.compared for o in outcomes) >= 10 * LIMIT
