"""Check 1, ids: the token ids ``ftx prepare`` writes against transformers'
``apply_chat_template(tokenize=True)``, for every model family on every dataset."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftx import _core

from .common import TOK, Family, gather, hf_tokenizer, oracle_ids, prepared
from .models import model_dir


@dataclass
class Outcome:
    """One family and dataset."""

    family: str
    dataset: str
    records: int = 0
    compared: int = 0
    agree: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Records ftx rejected that transformers renders and tokenizes: each needs a reason.
    rejected_but_rendered: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def compare_ids(
    family: Family, datasets: Sequence[str], root: Path, limit: int | None = None
) -> list[Outcome]:
    """ftx prepare vs apply_chat_template on the first ``limit`` records (all when None) of
    each dataset, in one ``prepare`` run.

    ``train_on="all"`` so that records without an assistant turn (BFCL questions) are compared
    too: the ids do not depend on the mask.
    """
    items = gather(datasets, limit)
    mdir = model_dir(family, root)
    template = str(TOK / family.template) if family.template else None
    results = prepared([r for _, _, r in items], mdir, template, "all", root)
    tok = hf_tokenizer(mdir)
    source = (TOK / family.template).read_text() if family.template else None
    outcomes = {ds: Outcome(family.name, ds) for ds in datasets}
    for (ds, n, record), (code, row) in zip(items, results, strict=True):
        o = outcomes[ds]
        o.records += 1
        norm = _core.normalize(json.dumps(record))
        if code is not None:
            o.rejected[code] += 1
            if "reject" not in norm and not isinstance(oracle_ids(tok, norm, source), str):
                o.rejected_but_rendered.append(f"record {n}: {code}")
            continue
        ids = row[0]
        o.compared += 1
        oracle = oracle_ids(tok, norm, source)
        if oracle == ids:
            o.agree += 1
        elif len(o.mismatches) < 5:
            o.mismatches.append(f"record {n}: {_first_difference(ids, oracle)}")
    return list(outcomes.values())


def _first_difference(ftx_ids: list[int], oracle: list[int] | str) -> str:
    if isinstance(oracle, str):
        return f"transformers refuses it ({oracle[:120]}) but ftx accepted it"
    k = next(
        (i for i, (a, b) in enumerate(zip(ftx_ids, oracle, strict=False)) if a != b),
        min(len(ftx_ids), len(oracle)),
    )
    return f"first difference at token {k}: ftx {ftx_ids[k : k + 5]} vs {oracle[k : k + 5]}"
