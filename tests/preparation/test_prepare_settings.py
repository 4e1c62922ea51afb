"""prepare's settings are declared once, in Rust: the flags, `--config` keys and Python keywords
are made from that declaration, and every problem is named at once with its key and value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ftx
from ftx import _core
from ftx.errors import ConfigIssues
from ftx.preparation import PrepareSettings


def _ftx(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", *map(str, args)], capture_output=True, text=True
    )


def test_the_python_keywords_are_the_engine_settings() -> None:
    assert list(PrepareSettings.__annotations__) == [s.name for s in _core.prepare_settings()]


def test_every_setting_is_a_flag_with_the_engine_choices() -> None:
    help_text = _ftx("prepare", "--help").stdout
    for s in _core.prepare_settings():
        flag = "--" + s.name.replace("_", "-")
        assert (f"--no-{flag[2:]}" if s.default is True else flag) in help_text, s.name
    # The spellings the engine accepts are all choices of the flag (openai was refused once).
    assert "openai" in help_text and "conversations" in help_text


def test_a_config_file_sets_what_flags_would_and_flags_override_it(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    config = tmp_path / "prepare.yaml"
    config.write_text(
        f"inputs: {example_data}\nmodel: {tiny_model}\nout: {tmp_path / 'a'}\n"
        "valid: 40\nseed: 3\ndedup: false\nformat: openai\n"
    )
    from_file = _ftx("prepare", "--config", config, "--json")
    assert from_file.returncode == 0, from_file.stderr
    options = json.loads(from_file.stdout)["options"]
    assert options["valid"] == {"count": 40} and options["seed"] == 3
    assert options["dedup"] is False and options["format"] == "messages"
    same = ftx.prepare(
        example_data,
        out=tmp_path / "b",
        model=tiny_model,
        valid=40,
        seed=3,
        dedup=False,
        format="openai",
    )
    assert same.provenance == json.loads(from_file.stdout)["provenance"]
    over = _ftx("prepare", "--config", config, "--seed", "4", "--out", tmp_path / "c", "--json")
    assert over.returncode == 0, over.stderr
    assert json.loads(over.stdout)["options"]["seed"] == 4


def test_every_problem_of_a_config_is_named_at_once(tmp_path: Path, tiny_model: Path) -> None:
    config = tmp_path / "prepare.yaml"
    config.write_text(f"model: {tiny_model}\nmax_lenght: 5\nvalid: 2.5\ntrain_on: user\n")
    out = _ftx("prepare", "--config", config, "--check-template")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(config) in out.stderr and "3 configuration problem(s)" in out.stderr
    assert "did you mean 'max_length'" in out.stderr.replace('"', "'")
    assert "valid = 2.5" in out.stderr and "train_on = 'user'" in out.stderr


def test_python_keywords_are_checked_the_same_way(example_data: Path, tiny_model: Path) -> None:
    with pytest.raises(ConfigIssues) as e:
        ftx.prepare(example_data, out="unused", model=tiny_model, seed=-1, bogus=1)  # type: ignore[call-arg]
    assert {i.key for i in e.value.issues} == {"seed", "bogus"}
    assert not Path("unused").exists()
