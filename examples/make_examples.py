"""Regenerates the example dataset and the tiny example tokenizer shipped in this folder.

Everything here is ftx's own: the records come from templates and a seeded RNG, and the
tokenizer is a small byte-level BPE trained on those records (needs the `tokenizers` package,
only to regenerate). Run: python examples/make_examples.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
UNITS = [("kilometers", "meters", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000)]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SYSTEM = "You are a concise assistant. Answer in one sentence."


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    q = rng.choice(["What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."])
    return q.format(a=a, b=b), f"{a} plus {b} is {a + b}."


def convert(rng: random.Random) -> tuple[str, str]:
    big, small, k = rng.choice(UNITS)
    n = rng.randint(2, 40)
    q = rng.choice(["How many {s} are in {n} {b}?", "Convert {n} {b} to {s}."])
    return q.format(s=small, n=n, b=big), f"{n} {big} is {n * k} {small}."


def mix(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(COLORS, 2)
    return f"Name one thing that is {a} and one that is {b}.", (
        f"A {a} thing could be a {a} ball, and a {b} thing could be a {b} kite."
    )


def records(rng: random.Random, n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    makers = [arithmetic, convert, mix]
    seen: set[str] = set()
    for i in range(n):
        turns = [rng.choice(makers)(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        # Only the one duplicate added on purpose below: regenerate accidental repeats.
        while turns[0][0] in seen:
            turns[0] = rng.choice(makers)(rng)
        seen.add(turns[0][0])
        kind = i % 3
        if kind == 0:
            msgs = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []
            for q, a in turns:
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            out.append({"messages": msgs})
        elif kind == 1:
            conv = []
            for q, a in turns:
                conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            out.append({"conversations": conv})
        else:
            q, a = turns[0]
            out.append({"instruction": q, "input": "", "output": a})
    return out


def main() -> None:
    rng = random.Random(0)
    recs = records(rng, 400)
    lines = [json.dumps(r) for r in recs]
    # A few records that show what ftx does with bad input: each is rejected with a reason.
    lines.insert(50, '{"messages": [{"role": "user", "content": "Hi"}')
    lines.insert(120, json.dumps({"messages": [{"role": "user", "content": "No answer here."}]}))
    lines.insert(200, json.dumps({"messages": [{"role": "narrator", "content": "Once upon"}]}))
    lines.insert(260, lines[10])  # an exact duplicate, dropped by dedup
    (HERE / "data" / "chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = [json.dumps(r) for r in recs] + [SYSTEM, "system user assistant"]
    tok.train_from_iterator(text, trainer)
    model_dir = HERE / "models" / "tiny-chatml"
    tok.save(str(model_dir / "tokenizer.json"))
    template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": template,
        "model_max_length": 2048,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()
