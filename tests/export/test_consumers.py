"""ftx's exports in the programs people load them with: the fused MLX folder and the run's
adapter served by ``mlx_lm.server`` (an OpenAI-style chat completion over 127.0.0.1 answers
what ``ftx generate`` answers), and the ``fuse --format peft`` adapter loaded by the real
``peft`` library on the same base in PyTorch (CPU, float32), whose logits are ftx's, for LoRA
and DoRA.

PyTorch lives in an environment of its own (``make peft-venv``, ``.venv-peft``): with torch in
ftx's environment every mlx-lm import loads it through transformers, seconds a process. CI
builds it, so there the PEFT test never skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import write_lora_run

from ftx.export import FuseOptions, fuse
from ftx.inference import Sampling, generate

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PEFT_PYTHON = Path(os.environ.get("FTX_PEFT_PYTHON", ROOT / ".venv-peft" / "bin" / "python"))
PROMPT = [5, 17, 42, 99, 3, 250, 7, 64, 128, 31, 11, 2]
# float32 on both sides; what differs is the order of the same float32 sums (BLAS, LoRA
# products): measured 5e-7 of the largest logit, base, LoRA and DoRA alike.
LOGITS_TOLERANCE = 1e-5
MESSAGES = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Where is the treasure?"},
]
MAX_TOKENS = 12
SERVER_START_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """Starts ``mlx_lm.server`` with the given arguments on a free loopback port once it
    answers /health; stopped (killed if it must be) at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str | Path) -> str:
        port = _free_port()
        log = tmp_path / f"server-{port}.log"
        cmd = [sys.executable, "-m", "mlx_lm.server", "--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as f:
            proc = subprocess.Popen([*cmd, *map(str, args)], stdout=f, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"mlx_lm.server exited: {log.read_text()[-2000:]}")
            try:
                if _request(f"{url}/health")[0] == 200:
                    return url
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        pytest.fail(f"mlx_lm.server did not answer /health in {SERVER_START_SECONDS}s")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _chat_completion(url: str) -> dict[str, Any]:
    body = {"messages": MESSAGES, "temperature": 0.0, "max_tokens": MAX_TOKENS}
    status, answer = _request(f"{url}/v1/chat/completions", body)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def _ftx_answer(model: Path, adapter: Path | None = None) -> str:
    from ftx.inference import Prompt

    r = generate(model, [Prompt(MESSAGES)], adapter=adapter, sampling=Sampling(max_tokens=12))
    return r.outputs[0].text


def test_mlx_lm_server_serves_the_fused_folder_and_the_adapter(
    server: Any, tiny_llama: Path, lora_run: Path, fused: Path
) -> None:
    expected = _ftx_answer(tiny_llama, lora_run)
    assert expected != _ftx_answer(tiny_llama)  # the adapter changes the answer
    for args in (("--model", fused), ("--model", tiny_llama, "--adapter-path", lora_run)):
        answer = _chat_completion(server(*args))
        _check(answer, expected, args)


def test_mlx_lm_server_loads_a_run_folder_of_ftx_train(
    server: Any, tiny_llama: Path, make_config: Any
) -> None:
    import ftx

    # a real run: adapters on every linear layer of the blocks, checkpoints, report and all
    trained = ftx.train(make_config(iters=2, learning_rate=1e-2)).run_dir
    answer = _chat_completion(server("--model", tiny_llama, "--adapter-path", trained))
    _check(answer, _ftx_answer(tiny_llama, trained), ("--adapter-path", trained))


def _check(answer: dict[str, Any], expected: str, args: tuple[str | Path, ...]) -> None:
    """A well-formed completion whose text is ``expected`` (a random model says no EOS token
    within MAX_TOKENS: the reply is cut there)."""
    assert answer["object"] == "chat.completion"
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == expected, args
    assert choice["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == MAX_TOKENS


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_loads_the_adapter_on_the_same_base_with_ftx_logits(
    tiny_llama: Path, tmp_path: Path, kind: str
) -> None:
    if not PEFT_PYTHON.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{PEFT_PYTHON} is missing; .ci/run runs `make peft-venv` first")
        pytest.skip(f"no PEFT environment at {PEFT_PYTHON} (make peft-venv)")
    import mlx.core as mx

    from ftx.evaluation import generation

    run = write_lora_run(tmp_path / "run", tiny_llama, kind=kind)
    fuse(tiny_llama, run, tmp_path / "peft", FuseOptions(format="peft"))
    out = tmp_path / "logits.npz"
    script = Path(__file__).with_name("peft_logits.py")
    args = [tiny_llama, tmp_path / "peft", out, *PROMPT]
    done = subprocess.run(
        [str(PEFT_PYTHON), str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    torch_side = np.load(out)

    model, _, _ = generation.load(tiny_llama)
    base = np.array(model(mx.array([PROMPT]))[0].astype(mx.float32))
    generation.add_adapter(model, run)
    ours = np.array(model(mx.array([PROMPT]))[0].astype(mx.float32))

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).max() / np.abs(b).max())

    assert diff(torch_side["base"], base) < LOGITS_TOLERANCE  # the same base in both
    assert diff(ours, base) > 1e-2  # the adapter does change the model
    assert diff(torch_side["adapted"], ours) < LOGITS_TOLERANCE
