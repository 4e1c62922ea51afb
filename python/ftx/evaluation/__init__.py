"""``ftx.evaluate``: the Python face of ``ftx evaluate``.

The base model and, given a run folder, the same base with the run's adapters, are scored on
the same inputs: the loss and perplexity of a prepared split (its trained tokens only), and
generation on held-out chat records against their reference answers. The model is loaded once;
the adapters are added after the base is scored. Inputs are checked before MLX is imported:
this face has no MLX; ``generation`` (loading, loss, sampling) is the body.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftx import __version__
from ftx.data import load_dataset, read_manifest
from ftx.errors import ConfigError, DataError
from ftx.evaluation.heldout import HeldOut, read_heldout
from ftx.evaluation.scoring import Rates, Score, rates, score
from ftx.files import write_text_atomic
from ftx.inference import check_model
from ftx.model_folder import model_embedding_rows
from ftx.run_folder import EVAL_DIR, EVAL_EXAMPLES, EVAL_RESULTS, METRICS
from ftx.run_report import try_write_report

# Default generation budget: the longest reference's tokens times this, plus a margin for
# the template's own markup (tags, end of turn). Bounded, so a CPU run stays short.
MAX_TOKENS_FACTOR = 1.5
MAX_TOKENS_MARGIN = 16
MAX_TOKENS_CAP = 512

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class LossResult:
    """Mean cross-entropy (nats per trained token) of a prepared split, and its exp."""

    split: str
    records: int
    trained_tokens: int
    truncated_records: int
    loss: float
    perplexity: float
    seconds: float


@dataclass(frozen=True)
class GenerationResult:
    rates: Rates
    generated_tokens: int
    seconds: float
    scores: list[Score] = field(repr=False)
    outputs: list[str] = field(repr=False)


@dataclass(frozen=True)
class ModelResult:
    """The scores of one model: ``base`` or ``adapted``."""

    label: str
    loss: LossResult | None
    generation: GenerationResult | None

    def metrics(self) -> dict[str, float | None]:
        """Flat metric name -> value (rates as fractions)."""
        m: dict[str, float | None] = {}
        if self.loss is not None:
            m["loss"] = self.loss.loss
            m["perplexity"] = self.loss.perplexity
        if self.generation is not None:
            r = self.generation.rates
            m["exact_match"] = r.exact_match
            m["contains"] = r.contains
            if r.tool_examples:
                m["tool_json_valid"] = r.tool_json_valid
                m["tool_name_accuracy"] = r.tool_name_accuracy
                m["tool_arguments_accuracy"] = r.tool_arguments_accuracy
        return m

    def to_dict(self) -> dict[str, Any]:
        gen = None
        if self.generation is not None:
            g = self.generation
            gen = {**asdict(g.rates), "generated_tokens": g.generated_tokens, "seconds": g.seconds}
        return {
            "loss": None if self.loss is None else asdict(self.loss),
            "generation": gen,
        }


@dataclass(frozen=True)
class EvalResult:
    model: Path
    adapter: Path | None
    base_description: str
    prepared: Path | None
    heldout: Path | None
    sampling: Sampling | None
    base: ModelResult
    adapted: ModelResult | None
    out_dir: Path | None
    seconds: float
    # RUN_DIR/report.html, rewritten when the results went into the run folder's eval/
    run_report: Path | None = None
    warnings: tuple[str, ...] = ()

    def delta(self) -> dict[str, float]:
        """Adapted minus base, for every metric both have."""
        if self.adapted is None:
            return {}
        a, b = self.adapted.metrics(), self.base.metrics()
        return {k: v - w for k, v in a.items() if (w := b.get(k)) is not None and v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "ftx-eval",
            "model": str(self.model),
            "adapter": None if self.adapter is None else str(self.adapter),
            "base_model": self.base_description,
            "data": {
                "prepared": None if self.prepared is None else str(self.prepared),
                "split": None if self.base.loss is None else self.base.loss.split,
                "heldout": None if self.heldout is None else str(self.heldout),
            },
            "sampling": None if self.sampling is None else asdict(self.sampling),
            "base": self.base.to_dict(),
            "adapted": None if self.adapted is None else self.adapted.to_dict(),
            "delta": self.delta(),
            "out_dir": None if self.out_dir is None else str(self.out_dir),
            "seconds": self.seconds,
            "run_report": None if self.run_report is None else str(self.run_report),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class _Inputs:
    model: Path
    adapter: Path | None
    prepared: Path | None
    heldout: list[HeldOut]
    heldout_path: Path | None


def _check(
    model: Path,
    adapter: Path | None,
    data: Sequence[Path],
    split: str,
    limit: int | None,
) -> _Inputs:
    """Every check that can fail before MLX loads."""
    check_model(model, adapter)
    if not data:
        raise ConfigError("data: give a prepared folder, a JSONL file of chat records, or both")
    dirs = [d for d in data if d.is_dir()]
    files = [d for d in data if not d.is_dir()]
    if len(dirs) > 1 or len(files) > 1:
        raise ConfigError(
            f"data = {[str(d) for d in data]}: at most one prepared folder and one JSONL file"
        )
    prepared = dirs[0] if dirs else None
    if prepared is not None:
        manifest = read_manifest(prepared)
        if split not in manifest.nonempty_splits():
            have = list(manifest.nonempty_splits())
            raise ConfigError(f"split = {split!r}: {prepared} has records in {have} only")
        if why := manifest.check_tokenizer(model):
            raise ConfigError(f"data = {prepared}: {why}")
    heldout = read_heldout(files[0], limit) if files else []
    return _Inputs(model, adapter, prepared, heldout, files[0] if files else None)


def _example_lines(
    inputs: _Inputs, prompts: list[str], results: list[ModelResult]
) -> list[dict[str, Any]]:
    lines = []
    for i, (ex, prompt) in enumerate(zip(inputs.heldout, prompts, strict=True)):
        line: dict[str, Any] = {
            "line": ex.line,
            "prompt": prompt,
            "reference": ex.reference,
            "reference_calls": None if ex.calls is None else [c.to_dict() for c in ex.calls],
        }
        for r in results:
            assert r.generation is not None
            line[r.label] = {"output": r.generation.outputs[i], **r.generation.scores[i].to_dict()}
        lines.append(line)
    return lines


def _write_results(
    out_dir: Path, result: EvalResult, examples: list[dict[str, Any]], started: datetime
) -> None:
    """``results.json`` with provenance, and ``examples.jsonl`` (removed when this evaluation
    generated nothing, so that no stale file sits next to these results)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {
        "ftx_version": __version__,
        "command": sys.argv,
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
    }
    if examples:
        lines = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in examples)
        write_text_atomic(out_dir / EVAL_EXAMPLES, lines)
    else:
        (out_dir / EVAL_EXAMPLES).unlink(missing_ok=True)
    body = {**result.to_dict(), "provenance": provenance}
    write_text_atomic(out_dir / EVAL_RESULTS, json.dumps(body, indent=2) + "\n")


def evaluate(
    model: str | Path,
    *,
    data: str | Path | Sequence[str | Path],
    adapter: str | Path | None = None,
    split: str = "test",
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_tokens: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 8,
    max_seq_length: int | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Scores ``model`` (and, with ``adapter``, the same model with a run's adapters).

    ``data``: a folder written by ``ftx prepare`` (loss and perplexity of ``split``), a JSONL
    file of chat records whose last assistant message is the reference (generation metrics),
    or one of each. Generation samples with ``temperature`` (0: greedy), ``top_p`` and
    ``seed``, up to ``max_tokens`` per answer (default: from the longest reference) on the
    first ``limit`` records. ``max_seq_length`` cuts longer records in the loss (default:
    none is cut). Results go to ``out`` (default: ``ADAPTER/eval`` when there is an adapter,
    else nowhere) as ``results.json`` and ``examples.jsonl``, one line per held-out example;
    when that is a training run's ``eval/``, its ``report.html`` is rewritten to show them.
    """
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    paths = [Path(data)] if isinstance(data, str | Path) else [Path(d) for d in data]
    if temperature < 0:
        raise ConfigError(f"temperature = {temperature}: must be >= 0 (0 is greedy)")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p = {top_p}: must be in (0, 1] (1 keeps every token)")
    for name, n in (("max_tokens", max_tokens), ("limit", limit), ("batch_size", batch_size)):
        if n is not None and n < 1:
            raise ConfigError(f"{name} = {n}: must be at least 1")
    if max_seq_length is not None and max_seq_length < 2:
        raise ConfigError(f"max_seq_length = {max_seq_length}: must be at least 2")
    inputs = _check(Path(model), None if adapter is None else Path(adapter), paths, split, limit)
    say = progress or (lambda _: None)

    from ftx.evaluation import generation  # the body: imports MLX, through ftx.runtime.mlx

    say(f"loading {inputs.model}")
    mlx_model, tokenizer, base = generation.load(inputs.model)
    rows = model_embedding_rows(inputs.model)
    ds = None if inputs.prepared is None else load_dataset(inputs.prepared, split, rows)
    budget = max_seq_length or (int(ds.lengths().max()) if ds is not None else 0)
    prompts: list[list[int]] = []
    encoded = generation.prompt_tokens(
        inputs.model, [(ex.messages, ex.tools) for ex in inputs.heldout]
    )
    for ex, ids in zip(inputs.heldout, encoded, strict=True):
        if isinstance(ids, str):
            raise DataError(
                f"{inputs.heldout_path}:{ex.line}: the chat template of {inputs.model} "
                f"cannot render this prompt ({ids})"
            )
        prompts.append(ids)
    sampling = None
    if inputs.heldout:
        longest = max(len(tokenizer.encode(ex.reference)) for ex in inputs.heldout)
        budget_tokens = max_tokens or min(
            MAX_TOKENS_CAP, math.ceil(longest * MAX_TOKENS_FACTOR) + MAX_TOKENS_MARGIN
        )
        sampling = Sampling(temperature, top_p, budget_tokens, seed)

    def run(label: str) -> ModelResult:
        loss = gen = None
        if ds is not None:
            say(f"{label}: loss on {split} ({len(ds)} records)")
            s = generation.split_loss(mlx_model, ds, batch_size, budget)
            loss = LossResult(**asdict(s), perplexity=math.exp(s.loss))
        if sampling is not None:
            say(f"{label}: generating {len(prompts)} answers (max {sampling.max_tokens} tokens)")
            start = time.perf_counter()
            outs = generation.generate(mlx_model, tokenizer, prompts, **asdict(sampling))
            gen_scores = [score(o.text, ex) for o, ex in zip(outs, inputs.heldout, strict=True)]
            gen = GenerationResult(
                rates=rates(gen_scores),
                generated_tokens=sum(o.tokens for o in outs),
                seconds=time.perf_counter() - start,
                scores=gen_scores,
                outputs=[o.text for o in outs],
            )
        return ModelResult(label, loss, gen)

    results = [run("base")]
    if inputs.adapter is not None:
        generation.add_adapter(mlx_model, inputs.adapter)
        results.append(run("adapted"))

    out_dir = Path(out) if out is not None else None
    if out_dir is None and inputs.adapter is not None:
        out_dir = inputs.adapter / EVAL_DIR
    result = EvalResult(
        model=inputs.model,
        adapter=inputs.adapter,
        base_description=base.describe(),
        prepared=inputs.prepared,
        heldout=inputs.heldout_path,
        sampling=sampling,
        base=results[0],
        adapted=results[1] if len(results) > 1 else None,
        out_dir=out_dir,
        seconds=time.perf_counter() - t0,
    )
    if out_dir is not None:
        rendered = [tokenizer.decode(p) for p in prompts]
        _write_results(out_dir, result, _example_lines(inputs, rendered, results), started)
        folder = inputs.adapter
        if (
            folder is not None
            and out_dir.resolve() == (folder / EVAL_DIR).resolve()
            and (folder / METRICS).is_file()
        ):
            html, notes = try_write_report(folder)  # the run's page gets this evaluation
            result = replace(result, run_report=html, warnings=tuple(notes))
    return result
