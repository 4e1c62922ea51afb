"""``ftx chat`` in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen.
Each reply on the screen is the one ``ftx generate`` gives for the same conversation; /system,
/reset and Ctrl-D do what they say. The last screen is kept for a person to look at
($FTX_TEST_ARTIFACTS, default tests/.artifacts). CI installs tmux (`make tmux`), so there the
test never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ftx.inference import Prompt, Sampling, conversation, generate

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

TMUX = shutil.which("tmux")
ARTIFACTS = Path(os.environ.get("FTX_TEST_ARTIFACTS", Path(__file__).parents[1] / ".artifacts"))
FTX = Path(sys.executable).with_name("ftx")  # the console script the wheel installed
WAIT_SECONDS = 90
GREEDY = Sampling(max_tokens=8)
PIRATE = "You are a pirate."


class Terminal:
    """One tmux server of its own (its own socket, so it starts from this environment)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", "chat").stdout

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", text)
        self.tmux("send-keys", "-t", "chat", "Enter")

    def wait(self, what: str, done: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            shown = self.screen()
            if done(shown):
                return shown
            time.sleep(0.1)
        pytest.fail(f"no {what} on the screen in {WAIT_SECONDS}s:\n{self.screen()}")

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "chat").returncode == 0


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if TMUX is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed; .ci/run runs `make tmux` first")
        pytest.skip("tmux is not installed here (make tmux)")
    t = Terminal(f"ftx-test-{os.getpid()}")
    try:
        yield t
    finally:
        if t.running():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / "chat_terminal.txt").write_text(t.screen(), encoding="utf-8")
        t.tmux("kill-server")


def _squeezed(text: str) -> str:
    return "".join(text.split())  # the pane wraps long lines and ends them in spaces


def test_chat_in_a_terminal(terminal: Terminal, tiny_llama: Path, lora_run: Path) -> None:
    def answer(messages: list[dict[str, str]]) -> str:
        r = generate(tiny_llama, [Prompt(messages)], adapter=lora_run, sampling=GREEDY)
        return r.outputs[0].text

    command = [str(FTX), "chat", str(tiny_llama), "--adapter", str(lora_run), "--max-tokens", "8"]
    terminal.tmux("new-session", "-d", "-s", "chat", "-x", "200", "-y", "50", *command)
    terminal.tmux("set-option", "-t", "chat", "remain-on-exit", "off")
    terminal.wait("prompt", lambda s: "ready: type a message" in s and s.rstrip().endswith(">>>"))

    def say(text: str, reply: str) -> str:
        before = terminal.screen().count(">>>")
        terminal.type(text)
        shown = terminal.wait(
            f"reply to {text!r}", lambda s: s.count(">>>") > before and s.rstrip().endswith(">>>")
        )
        last = shown[shown.rindex(f">>> {text}") :]
        assert _squeezed(reply) in _squeezed(last), (reply, last)
        return last

    first = answer(conversation("Hi"))
    say("Hi", first)
    assert "(system prompt: 'You are a pirate.')" in say("/system " + PIRATE, "")
    history = [*conversation("Hi", PIRATE), {"role": "assistant", "content": first}]
    second = answer([*history, {"role": "user", "content": "Hi"}])
    say("Hi", second)
    assert "(conversation cleared)" in say("/reset", "")
    third = answer(conversation("Hi", PIRATE))
    assert third != first  # the system prompt stayed and changed the reply
    say("Hi", third)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "chat_terminal.txt").write_text(terminal.screen(), encoding="utf-8")
    terminal.tmux("send-keys", "-t", "chat", "C-d")
    deadline = time.monotonic() + WAIT_SECONDS
    while terminal.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not terminal.running(), "Ctrl-D did not end ftx chat"
