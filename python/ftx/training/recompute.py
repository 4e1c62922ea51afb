"""Memory for compute: activation checkpointing of the transformer blocks, and the loss over the
vocabulary in chunks of positions.

Checkpointing. A checkpointed block keeps only its input for the backward pass and computes its
activations again there (``mx.checkpoint``). The block's class is swapped, on that instance
only, for a subclass whose ``__call__`` goes through the checkpoint, and swapped back when
training ends, so the model that is saved, fused or evaluated is the one mlx-lm built.
Recomputing draws random numbers again: mlx-lm's ``grad_checkpoint`` then takes the gradient of
another dropout mask than the one its loss used. Here the dropouts inside a checkpointed block
draw from a key given to the checkpointed function, so both passes draw the same masks.

The chunked loss. Cross-entropy at N trained positions over a vocabulary of V needs the N x V
logits, their softmax and its gradient at once (on SmolLM2's 49,152 tokens, 590 KiB a
position). ``chunked_cross_entropy`` computes them for a chunk of positions at a time, and the
gradient of the hidden states with it, in the forward pass: the backward only scales it, so no
chunk is computed twice. Each chunk waits for the last one's results (``mx.depends``), so no
two chunks' logits are alive together. The head's weights are frozen in every method ftx
trains (adapters and full fine-tuning train the blocks only), so the hidden states' gradient
is all the backward needs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from ftx.runtime.mlx import mx, nn


class SharedKey:
    """The key of one call of a checkpointed block, read by the dropouts inside it."""

    keys: mx.array | None = None


class KeyedDropout(nn.Module):
    """``nn.Dropout`` whose mask comes from its block's key, not the global random state."""

    def __init__(self, p: float, shared: SharedKey, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._keep = 1 - p
        self._shared = shared
        self._index = index

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training or self._shared.keys is None:
            return x
        mask = mx.random.bernoulli(self._keep, x.shape, key=self._shared.keys[self._index])
        return (mask * x) * (1 / self._keep)


@cache
def _checkpointed(cls: type[nn.Module]) -> type[nn.Module]:
    call: Callable[..., Any] = cls.__call__

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        shared: SharedKey | None = self.__dict__.get("_ftx_shared")
        count = self.__dict__.get("_ftx_dropouts", 0)

        def inner(params: Any, key: mx.array, *args: Any, **kwargs: Any) -> Any:
            self.update(params)
            if shared is not None:
                # A key has no gradient (random bits have no derivative to ask for).
                shared.keys = mx.random.split(mx.stop_gradient(key), count)
            return call(self, *args, **kwargs)

        # Drawn from the global state outside the checkpoint, so the recomputation is given
        # the same key; a block without dropout draws nothing (its random stream is unchanged).
        key = (
            mx.random.randint(0, 2**31 - 1, (2,), mx.uint32) if shared is not None else mx.array(0)
        )
        recomputed: Callable[..., Any] = mx.checkpoint(inner)
        return recomputed(self.trainable_parameters(), key, *args, **kwargs)

    return type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": __call__})


def checkpoint_blocks(blocks: list[nn.Module]) -> Callable[[], None]:
    """Checkpoints ``blocks`` in place; the returned function undoes it."""
    undo: list[Callable[[], None]] = []
    for block in blocks:
        cls = type(block)
        dropouts = [
            (name, m)
            for name, m in block.named_modules()
            if isinstance(m, nn.Dropout) and m._p_1 < 1
        ]
        if dropouts:
            shared = SharedKey()
            object.__setattr__(block, "_ftx_shared", shared)
            object.__setattr__(block, "_ftx_dropouts", len(dropouts))
            for i, (name, m) in enumerate(dropouts):
                _replace(block, name, KeyedDropout(1 - m._p_1, shared, i))
        block.__class__ = _checkpointed(cls)

        def restore(block: nn.Module = block, cls: type = cls, dropouts: Any = dropouts) -> None:
            block.__class__ = cls
            for name, m in dropouts:
                _replace(block, name, m)
            block.__dict__.pop("_ftx_shared", None)
            block.__dict__.pop("_ftx_dropouts", None)

        undo.append(restore)

    def restore_all() -> None:
        for restore_one in undo:
            restore_one()

    return restore_all


def _replace(root: nn.Module, dotted: str, module: nn.Module) -> None:
    *parents, leaf = dotted.split(".")
    owner: Any = root
    for part in parents:
        owner = owner[int(part)] if isinstance(owner, list) else owner[part]
    owner[leaf] = module


def chunked_cross_entropy(
    head: Callable[[mx.array], mx.array], chunk: int
) -> Callable[[mx.array, mx.array, mx.array], mx.array]:
    """sum(weights * cross_entropy(head(hidden), targets)), ``chunk`` positions at a time."""

    @mx.custom_function
    def loss(hidden: mx.array, targets: mx.array, weights: mx.array) -> tuple[mx.array, mx.array]:
        total = mx.array(0.0)
        grads: list[mx.array] = []
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            if grads:
                # MLX schedules independent chunks side by side (breadth first, 20 wide):
                # without this every chunk's logits were alive at once, 2.4 GB for 8k positions
                # of SmolLM2's vocabulary against 0.17 GB chunk by chunk.
                h = mx.depends(h, [grads[-1], total])
            t, w = targets[start : start + chunk], weights[start : start + chunk]
            logits = head(h).astype(mx.float32)
            lse = mx.logsumexp(logits, axis=-1)
            picked = mx.take_along_axis(logits, t[:, None], axis=-1)[:, 0]
            total = total + ((lse - picked) * w).sum()
            # d/dlogits of w * (lse - logit[t]) = w * (softmax - onehot(t))
            onehot = mx.arange(logits.shape[-1])[None] == t[:, None]
            dlogits = (mx.exp(logits - lse[:, None]) - onehot) * w[:, None]
            _, (dh,) = mx.vjp(head, [h], [dlogits.astype(h.dtype)])
            grads.append(dh)
        return total, mx.concatenate(grads) if grads else mx.zeros_like(hidden)

    @loss.vjp
    def loss_vjp(
        primals: tuple[mx.array, ...],
        cotangents: tuple[mx.array, ...],
        outputs: tuple[mx.array, ...],
    ) -> tuple[mx.array, mx.array, mx.array]:
        hidden, targets, weights = primals
        return (
            (cotangents[0] * outputs[1]).astype(hidden.dtype),
            mx.zeros_like(targets),
            mx.zeros_like(weights),
        )

    def total(hidden: mx.array, targets: mx.array, weights: mx.array) -> mx.array:
        out: tuple[mx.array, mx.array] = loss(hidden, targets, weights)  # type: ignore[assignment]
        return out[0]

    return total
