"""Every shared chat template renders with ftx exactly as jinja2 does through transformers."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.mark.slow
def test_every_template_renders_like_transformers(parity: ModuleType) -> None:
    templates = parity.all_templates()
    assert len(templates) > 150
    problems = []
    for path in templates:
        r = parity.compare_renders(path)
        listed = parity.RENDER_EXCEPTIONS.get(r.template)
        if r.differences and listed is None:
            problems.append(f"{r.template}: {r.differences}")
        if listed is not None and not r.differences:
            problems.append(f"{r.template} is listed as differing ({listed}) but agrees")
    assert not problems, "\n".join(problems)
