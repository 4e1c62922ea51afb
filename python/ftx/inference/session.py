"""The MLX side of ``ftx chat`` and ``ftx generate``: a model (with a run's adapters) loaded as
``ftx evaluate`` loads it, batched generation through ``ftx.evaluation.generation``, and a chat
session that streams each reply through mlx-lm's ``stream_generate``.

A session keeps the KV cache of what it has computed: each turn's prompt is the whole
conversation rendered again by ftx's engine (the template decides how earlier turns look),
and only what differs from the cached tokens is computed (the cache is trimmed back to the
first token that differs), so a long conversation costs its new turn, not its history.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import mx, nn

from mlx_lm.generate import stream_generate
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper

from ftx.errors import DataError
from ftx.evaluation import generation
from ftx.inference import Message, Output, Progress, Prompt, Sampling


def load(model_dir: Path, adapter: Path | None, say: Progress) -> tuple[nn.Module, Any]:
    say(f"loading {model_dir}" + (f" with the adapters of {adapter}" if adapter else ""))
    model, tokenizer, _ = generation.load(model_dir)
    if adapter is not None:
        generation.add_adapter(model, adapter)
    return model, tokenizer


def render(model_dir: Path, prompts: list[Prompt]) -> list[list[int]]:
    """Each prompt's tokens, generation prompt included, by ftx's one template engine."""
    encoded = generation.prompt_tokens(model_dir, [(p.messages, p.tools) for p in prompts])
    out = []
    for p, ids in zip(prompts, encoded, strict=True):
        if isinstance(ids, str):
            raise DataError(
                f"{p.source}: the chat template of {model_dir} cannot render this prompt ({ids})"
            )
        out.append(ids)
    return out


def generate_all(
    model_dir: Path, adapter: Path | None, prompts: list[Prompt], s: Sampling, say: Progress
) -> list[Output]:
    ids = render(model_dir, prompts)  # before loading: a bad prompt fails at once
    model, tokenizer = load(model_dir, adapter, say)
    say(f"generating {len(ids)} answer(s), at most {s.max_tokens} tokens each")
    outs = generation.generate(
        model,
        tokenizer,
        ids,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        max_tokens=s.max_tokens,
        seed=s.seed,
    )
    return [
        Output(
            source=p.source,
            prompt=tokenizer.decode(i),
            text=o.text,
            tokens=o.tokens,
            # batch_generate keeps no EOS token: a reply of max_tokens tokens was cut there
            finish_reason="length" if o.tokens >= s.max_tokens else "stop",
        )
        for p, i, o in zip(prompts, ids, outs, strict=True)
    ]


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class ChatSession:
    """A conversation with a loaded model. ``messages`` holds the exchanges so far (without
    the system prompt, which ``system`` holds and every render puts first)."""

    def __init__(
        self,
        model_dir: Path,
        adapter: Path | None,
        model: nn.Module,
        tokenizer: TokenizerWrapper,
        sampling: Sampling,
        system: str | None,
    ) -> None:
        self.model_dir = model_dir
        self.adapter = adapter
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.system = system
        self.messages: list[Message] = []
        # the last reply: its prompt's tokens, how many of them were computed (the rest came
        # from the cache), the tokens generated and why it ended ("stop", "length")
        self.last_prompt_tokens = 0
        self.last_computed_tokens = 0
        self.last_tokens = 0
        self.last_finish_reason: str | None = None
        self._sampler = make_sampler(
            temp=sampling.temperature,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            top_k=sampling.top_k,
        )
        self._replies = 0
        self._cache: list[Any] | None = None
        self._cached: list[int] = []

    @classmethod
    def load(
        cls,
        model_dir: Path,
        adapter: Path | None,
        sampling: Sampling,
        system: str | None,
        say: Progress,
    ) -> ChatSession:
        model, tokenizer = load(model_dir, adapter, say)
        return cls(model_dir, adapter, model, tokenizer, sampling, system)

    def reset(self) -> None:
        """Forgets the conversation; the system prompt stays."""
        self.messages = []

    def transcript(self) -> dict[str, Any]:
        """The session as ``ftx chat --json`` prints it."""
        return {
            "format": "ftx-chat",
            "model": str(self.model_dir),
            "adapter": None if self.adapter is None else str(self.adapter),
            "sampling": asdict(self.sampling),
            "system": self.system,
            "messages": self.messages,
        }

    def conversation(self) -> list[Message]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.messages]

    def _uncached(self, prompt: list[int]) -> list[int]:
        """The tokens of ``prompt`` the cache lacks, the cache trimmed to the rest (at least
        one token is left to compute: its logits start the reply)."""
        cache = self._cache
        if cache is None or not can_trim_prompt_cache(cache):
            self._cache, self._cached = make_prompt_cache(self.model), []
            return prompt
        k = min(_common(self._cached, prompt), len(prompt) - 1)
        trim_prompt_cache(cache, len(self._cached) - k)
        self._cached = self._cached[:k]
        return prompt[k:]

    def send(self, text: str) -> Generator[str, None, None]:
        """Streams the reply to ``text`` piece by piece; the exchange joins ``messages`` when
        the reply ends, or is stopped (what was produced stands as the reply)."""
        user = {"role": "user", "content": text}
        (prompt,) = render(self.model_dir, [Prompt([*self.conversation(), user], source="chat")])
        todo = self._uncached(prompt)
        self.last_prompt_tokens, self.last_computed_tokens = len(prompt), len(todo)
        self.messages.append(user)
        mx.random.seed(self.sampling.seed + self._replies)
        self._replies += 1
        pieces: list[str] = []
        generated: list[int] = []
        finished = False
        self.last_finish_reason = None
        try:
            for r in stream_generate(
                self.model,
                self.tokenizer,
                mx.array(todo),
                max_tokens=self.sampling.max_tokens,
                sampler=self._sampler,
                prompt_cache=self._cache,
            ):
                generated.append(r.token)
                self.last_finish_reason = r.finish_reason
                if r.text:
                    pieces.append(r.text)
                    yield r.text
            finished = True
        finally:
            self.messages.append({"role": "assistant", "content": "".join(pieces)})
            stop = self.last_finish_reason == "stop"
            self.last_tokens = len(generated) - int(stop)
            known = prompt + generated
            held = getattr(self._cache[0], "offset", None) if finished and self._cache else None
            if isinstance(held, int) and held <= len(known):
                self._cached = known[:held]  # the prompt and the tokens fed back so far
            else:  # stopped mid-step (the layers' caches may disagree) or not countable
                self._cache, self._cached = None, []
