"""Parity of ftx with transformers (the oracle) on the real data beside the repo.

Three checks, shared by the tests (tests/parity/) and the report (``python -m tools.parity``):

1. ids: for each model family, every record of every dataset goes through ``ftx.prepare`` (dedup
   off, no split) and ``ftx.load_dataset``; the ids must equal
   ``AutoTokenizer.apply_chat_template(messages, tools=..., tokenize=True)`` on the messages ftx
   normalized the record to (``ftx._core.normalize``: what the template sees).
2. masks: for each TRL template with a ``*_training.jinja`` twin, ftx's mask from the plain
   template must equal transformers' ``assistant_masks`` from the twin, up to the documented rules
   in :func:`explain_mask_difference`.
3. renders: every template under ``chat_templates/`` renders each synthetic conversation of
   ``ftx.preparation.template_check`` exactly as transformers' jinja2 does, or both refuse it.

transformers' ``strftime_now`` is pinned to 26 Jul 2024, the date ftx renders (docs/masking.md).
"""

from .common import DATASETS, FAMILIES, Family
from .ids import Outcome, compare_ids
from .masks import (
    MASK_DATASETS,
    MASK_TOKENIZERS,
    MASK_UNSUPPORTED,
    MaskOutcome,
    compare_masks,
    explain_mask_difference,
    training_pairs,
)
from .models import model_dir
from .renders import RENDER_EXCEPTIONS, RenderOutcome, all_templates, compare_renders

__all__ = [
    "DATASETS",
    "FAMILIES",
    "MASK_DATASETS",
    "MASK_TOKENIZERS",
    "MASK_UNSUPPORTED",
    "RENDER_EXCEPTIONS",
    "Family",
    "MaskOutcome",
    "Outcome",
    "RenderOutcome",
    "all_templates",
    "compare_ids",
    "compare_masks",
    "compare_renders",
    "explain_mask_difference",
    "model_dir",
    "training_pairs",
]
