"""Peak-memory estimate of a training run, from shapes alone (``ftx train --dry-run``).

peak = weights + trainable copies (parameters, gradients, accumulated gradients, optimizer
state) + the activations one micro-batch keeps for its backward pass + the logits at trained
positions. Activations are counted per token and per block from the architecture's widths, plus
the arrays one block's attention backward holds at once; the constants are the tensors an MLX
transformer block keeps (see ``ACTIVATION_WIDTHS``) and are checked against
``mx.get_peak_memory()`` in tests/training/test_memory.py (eight shapes) and on SmolLM2-135M
(benches/test_long_context.py). The run holds MLX to this estimate (``fit.memory_limits``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from ftx.runtime.mlx import mx, nn

from ftx.config import TrainConfig
from ftx.training.attention import CHUNK_BYTES, query_chunk
from ftx.training.batching import Plan
from ftx.training.model import flatten, on_gpu, trainable_parameters

# Saved for the backward pass, per token of a block, in units of the hidden width D, the key/
# value width, the MLP width I and (attention weights) heads x row length.
ACTIVATION_WIDTHS = {"hidden": 10.0, "kv": 3.0, "mlp": 5.0, "attention": 1.0}
# The backward pass of one block's attention holds a few more (rows x heads x L x L) arrays at
# once (the scores and the gradients of the weights and the scores) on top of the saved weights:
# on long rows these, not the saved copies of every block, set the peak's excess.
ATTENTION_TRANSIENT = 3.0
# Chunked attention's weights alive at once: MLX encodes a few chunks ahead of the one it
# computes (the 2k rows of tests/training/test_memory.py and SmolLM2's widths at 2k: 10
# chunks). Further ahead, which a slowed worker thread lets it run (34 chunks at 8k on a loaded
# machine), MLX is held back by the memory limit the run sets to this estimate
# (fit.memory_limits).
CHUNKS_AT_ONCE = 12.0
# Checkpointed, the block being differentiated holds its activations computed again and their
# gradients at once: this many times the activations it saves without checkpointing (attention
# weights apart), measured in tests/training/test_memory.py.
RECOMPUTED_BLOCK = 2.5
# Optimizer state per trainable value.
STATE_COPIES = {"adamw": 2.0, "adam": 2.0, "sgd": 1.0, "adafactor": 0.0}
# Logits at trained positions: the logits, their softmax and its gradient, in float32.
LOGIT_COPIES = 3.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by kind, their total, the budget they must fit in (``available``) and how the run
    computes: checkpointed blocks (of the trained ones), positions per chunk of the loss (None:
    in one piece)."""

    weights: int
    adapters: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    available: int | None
    fits: bool | None
    checkpointed_blocks: int = 0
    trained_blocks: int = 0
    loss_chunk: int | None = None
    # Attention in chunks where a call's weights exceed attention.CHUNK_BYTES (training/run.py
    # opens it from this): its backward recomputes the weights, chunk by chunk.
    chunked_attention: bool = False

    @property
    def grad_checkpoint(self) -> bool:
        """Whether any block is checkpointed."""
        return self.checkpointed_blocks > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "grad_checkpoint": self.grad_checkpoint}


def trained_blocks(model: nn.Module, config: TrainConfig) -> int:
    """How many of the last blocks the run trains (``num_layers``, None: all)."""
    return min(config.num_layers or len(model.layers), len(model.layers))


def available_memory() -> int | None:
    """Memory training may use: the GPU's recommended working set, else the RAM the OS reports
    as available."""
    if on_gpu():
        info: dict[str, Any] = dict(mx.device_info())
        size = info.get("max_recommended_working_set_size") or info.get("memory_size")
        return int(size) if size else None
    if sys.platform == "linux":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _widths(model_config: dict[str, Any]) -> tuple[int, int, int, int, int]:
    c = model_config.get("text_config", model_config)
    d = int(c["hidden_size"])
    heads = int(c["num_attention_heads"])
    head_dim = int(c.get("head_dim") or d // heads)
    kv = int(c.get("num_key_value_heads") or heads) * head_dim
    mlp = int(c.get("intermediate_size") or 4 * d)
    return d, kv, mlp, heads, int(c["vocab_size"])


def estimate_memory(
    model: nn.Module,
    config: TrainConfig,
    plan: Plan,
    model_config: dict[str, Any],
    available: int | None,
    checkpointed: int,
    loss_chunk: int | None,
    streams: int = 1,
    chunk_attention: bool = False,
) -> MemoryEstimate:
    """The estimate for the widest micro-batch of ``plan``, against ``available`` bytes.

    With several CPU streams each computes a shard of the rows; their activations peak one
    shard at a time (measured on 2 streams: 51-53% of one stream's at every shape of
    tests/training/test_memory.py), so the widest shard is what is counted.
    ``checkpointed``: how many trained blocks are recomputed; ``chunk_attention``: attention in
    chunks."""
    trainable = sum(v.nbytes for v in trainable_parameters(model).values())
    weights = sum(v.nbytes for _, v in flatten(model.parameters())) - trainable
    gradients = trainable * (2 if config.grad_accumulation > 1 else 1)
    optimizer = int(trainable * STATE_COPIES[config.optimizer])
    if config.optimizer == "sgd" and config.momentum == 0:
        optimizer = 0

    d, kv, mlp, heads, vocab = _widths(model_config)
    rows, width = plan.widest_batch()
    rows = -(-rows // streams)
    tokens = rows * width
    dense = (
        ACTIVATION_WIDTHS["hidden"] * d
        + ACTIVATION_WIDTHS["kv"] * kv
        + ACTIVATION_WIDTHS["mlp"] * mlp
    )
    attention = ACTIVATION_WIDTHS["attention"] * heads * width
    attention_backward = ATTENTION_TRANSIENT * rows * heads * width * width
    if chunk_attention and rows * heads * width * width * 4 > CHUNK_BYTES:
        # Chunked (training/attention.py): a log-sum-exp per head is kept instead of the
        # weights, and the backward holds a few chunks' weights.
        attention = heads
        chunk = min(width, query_chunk(rows, heads, width))
        in_flight = min(CHUNKS_AT_ONCE, -(-width // chunk))  # no more than the row has
        attention_backward = in_flight * rows * heads * chunk * width
    # Only the trained blocks keep activations for the backward pass: autodiff does not reach
    # the frozen blocks below them. A checkpointed one keeps its input, and the one block being
    # differentiated holds its activations again. The checkpointed blocks are the first ones,
    # differentiated last: by then the others' activations are gone.
    blocks = trained_blocks(model, config)
    ckpt = min(checkpointed, blocks)
    itemsize = 4 if not on_gpu() else 2
    recomputed = RECOMPUTED_BLOCK * dense + attention if ckpt else 0
    saved = tokens * (ckpt * d + max((blocks - ckpt) * (dense + attention), recomputed))
    trained = tokens * plan.trained_fraction
    at_once = trained if loss_chunk is None else min(trained, loss_chunk)
    activations = int(
        (saved + attention_backward) * itemsize
        + at_once * vocab * 4 * LOGIT_COPIES
        + (0 if loss_chunk is None else trained * d * 4)  # the hidden states' gradient
    )

    total = weights + trainable + gradients + optimizer + activations
    return MemoryEstimate(
        weights=weights,
        adapters=trainable,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        total=total,
        available=available,
        fits=None if available is None else total <= available,
        checkpointed_blocks=ckpt,
        trained_blocks=blocks,
        loss_chunk=loss_chunk,
        chunked_attention=chunk_attention,
    )
