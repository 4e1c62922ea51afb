"""The MLX side of evaluation: load a model as training computes it, the loss of a prepared
split, and batched generation through mlx-lm's sampler.

The loss is the trainer's own (``Forward.loss`` over ``Plan`` batches in fixed order, records
padded one per row): the mean cross-entropy of next-token prediction at trained positions,
so a test loss here is comparable with the validation loss of ``ftx train``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

import numpy as np
from mlx_lm.generate import batch_generate
from mlx_lm.models.cache import KVCache, make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_config, load_tokenizer

from ftx.config import TrainConfig
from ftx.data import PreparedDataset
from ftx.model_folder import tokenizer_folder
from ftx.training.batching import Plan
from ftx.training.forward import Forward
from ftx.training.model import Base, load_base, scalar

# Sequences decoded together: one pass over the weights serves them all. Measured on SmolLM2
# on 2 CPU cores: 3 tokens/s decoding one sequence, 57 tokens/s decoding 32.
MAX_BATCH = 64
# Forward.loss divides by its norm argument: 1 makes it the sum over the batch.
ONE = mx.array(1.0)


@dataclass(frozen=True)
class SplitLoss:
    split: str
    records: int
    trained_tokens: int
    truncated_records: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int


def load(model_dir: Path) -> tuple[nn.Module, TokenizerWrapper, Base]:
    """The model in eval mode, computing as ``ftx train`` does by default (on CPU a quantized
    base is dequantized and floats are float32, the fast paths there), and its tokenizer, which
    stops at every EOS token the model names (``generation_config.json`` may list several,
    as mlx-lm reads them)."""
    model, base = load_base(TrainConfig.model_construct(model=model_dir))
    model.eval()
    config = load_config(model_dir)
    tokenizer = load_tokenizer(model_dir, eos_token_ids=config.get("eos_token_id"))
    return model, tokenizer, base


def add_adapter(model: nn.Module, run_dir: Path) -> None:
    """Wraps the model's layers with the run's adapters (mlx-lm's format), in place."""
    load_adapters(model, str(run_dir))
    model.eval()


class _Continuing(Forward):
    """``Forward`` on rows that continue a prefix whose keys and values are already computed:
    every row gets a copy of the prefix's KV cache, so attention and RoPE positions are as if
    the prefix were in the row."""

    prefix: list[KVCache] | None = None

    def features(self, inputs: mx.array, segments: mx.array | None) -> mx.array:
        if self.prefix is None:
            return super().features(inputs, segments)
        rows = inputs.shape[0]
        cache = []
        for c in self.prefix:
            copy = KVCache()
            keys, values = (mx.repeat(a[..., : c.offset, :], rows, axis=0) for a in c.state[:2])
            copy.state = (keys, values, c.offset)
            cache.append(copy)
        run = self.model.model if self.gather_head else self.model
        out: mx.array = run(inputs, cache=cache)
        return out.reshape(-1, out.shape[-1])


def _loss_prefix(ds: PreparedDataset, plan: Plan) -> int:
    """Input tokens every record of the plan starts with, all before any trained target (so
    the prefix's own logits are never needed) and within the row budget."""
    first = ds[plan.ids[0]][0]
    k = plan.budget - 1
    for i in plan.ids:
        tokens, mask = ds[int(i)]
        k = min(k, int(np.flatnonzero(mask[1:])[0]), len(tokens) - 2)
        differ = np.flatnonzero(tokens[:k] != first[:k])
        k = int(differ[0]) if len(differ) else k
    return max(k, 0)


def split_loss(
    model: nn.Module, ds: PreparedDataset, batch_size: int, max_seq_length: int
) -> SplitLoss:
    """The trainer's loss over a split. A head that all records share (a system prompt, tool
    schemas) is computed once: on a CPU that is most of the work on such data."""
    start = time.perf_counter()
    forward = _Continuing(model, packed=False)
    forward.probe()
    plan = Plan(ds, batch_size, max_seq_length, packing=False, seed=None)
    k = _loss_prefix(ds, plan) if len(plan.ids) > 1 else 0
    cache = make_prompt_cache(model)
    if k and all(type(c) is KVCache for c in cache):
        model(mx.array(ds[int(plan.ids[0])][0][None, :k].astype(np.int32)), cache=cache)
        mx.eval([c.state[:2] for c in cache])
        forward.prefix = cache
    else:
        k = 0
    total, count = mx.array(0.0), 0
    for b in plan:
        # Flat positions index rows of ``width`` inputs. The rows are cut to start after the
        # prefix and to end at the last trained position (attention is causal: nothing after
        # it changes a loss).
        if b.trained == 0:  # every target of these records lies past max_seq_length
            continue
        rows, cols = np.divmod(b.positions, b.inputs.shape[1])
        end = int(cols[: b.trained].max()) + 1
        positions = mx.array(rows * (end - k) + np.maximum(cols - k, 0))
        inputs = mx.array(b.inputs[:, k:end])
        ce = forward.loss(inputs, None, positions, mx.array(b.targets), mx.array(b.weights), ONE)
        total = total + ce
        count += b.trained
        mx.eval(total)
    return SplitLoss(
        split=ds.split,
        records=len(plan.ids),
        trained_tokens=count,
        truncated_records=plan.truncated,
        loss=scalar(total) / max(1, count),
        seconds=time.perf_counter() - start,
    )


def prompt_tokens(
    model_dir: Path, conversations: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]
) -> list[list[int] | str]:
    """Each conversation's prompt with the generation prompt, rendered by ftx's one template
    engine and tokenized by the same tokenizer as ``ftx prepare`` (so a prompt here is the
    training render of that conversation up to the reply), or the reason it cannot render."""
    from ftx import _core

    records = [
        json.dumps({"messages": messages, **({"tools": tools} if tools else {})})
        for messages, tools in conversations
    ]
    out = _core.prompts(records, model_dir=str(tokenizer_folder(model_dir)))
    return [
        item["ids"] if "reject" not in item else "{code}: {message}".format(**item["reject"])
        for item in out["items"]
    ]


def shared_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each to prefill."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def _prefix_cache(model: nn.Module, prefix: list[int]) -> list[Any] | None:
    """The KV cache after ``prefix``, for every prompt to start from; None where the cache
    type cannot be batched with history."""
    cache = make_prompt_cache(model)
    if not prefix or not all(hasattr(c, "merge") for c in cache):
        return None
    model(mx.array([prefix]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def generate(
    model: nn.Module,
    tokenizer: TokenizerWrapper,
    prompts: list[list[int]],
    *,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    top_k: int = 0,
    min_p: float = 0.0,
) -> list[Generated]:
    """Continuations of all prompts in one continuous batch, each ending at an EOS token or
    after ``max_tokens``. Temperature 0 is greedy; ``top_p``, ``top_k`` and ``min_p`` (1, 0, 0:
    off) narrow the choice as mlx-lm's sampler does; the seed fixes the sampling.

    Held-out prompts usually share a long head (system prompt, tool schemas): it is computed
    once and its cache shared, which on a CPU is most of the prompt time."""
    k = shared_prefix(prompts)
    cache = _prefix_cache(model, prompts[0][:k])
    if cache is None:
        k = 0
    mx.random.seed(seed)
    r = batch_generate(
        model,
        tokenizer,
        [p[k:] for p in prompts],
        prompt_caches=None if cache is None else [cache] * len(prompts),
        max_tokens=max_tokens,
        sampler=make_sampler(temp=temperature, top_p=top_p, min_p=min_p, top_k=top_k),
        return_token_ids=True,
        completion_batch_size=min(len(prompts), MAX_BATCH),
        prefill_batch_size=min(len(prompts), MAX_BATCH),
    )
    return [Generated(streamed_text(tokenizer, i), len(i)) for i in r.token_ids or []]


def streamed_text(tokenizer: TokenizerWrapper, ids: list[int]) -> str:
    """The text mlx-lm's ``stream_generate`` gives for these tokens (its detokenizer drops
    the space a reply starts with), so a batched answer reads as ``ftx chat``'s, mlx-lm's and
    ``mlx_lm.server``'s do."""
    d = tokenizer.detokenizer
    for t in ids:
        d.add_token(t)
    d.finalize()
    text: str = d.text
    return text
