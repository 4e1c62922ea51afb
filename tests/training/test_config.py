"""Configuration: YAML and flags share keys, profiles, and problems that name key, value and
what is allowed, all found before anything heavy loads."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftx.cli import main
from ftx.config import TrainConfig, load_config, profiles, validate
from ftx.errors import ConfigIssues

BASE = {"model": "m", "data": "d", "out": "o"}


def issues(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigIssues) as info:
        validate(raw)
    return {i.key: str(i) for i in info.value.issues}


def test_every_problem_names_key_value_and_what_is_allowed() -> None:
    found = issues({**BASE, "rank": 0, "method": "qlora", "quantize": 3, "learning_rate": "fast"})
    assert found["rank"] == "rank = 0: Input should be greater than or equal to 1"
    assert found["method"] == "method = 'qlora': Input should be 'lora', 'dora' or 'full'"
    assert found["quantize"] == "quantize = 3: Input should be 4 or 8"
    assert "learning_rate = 'fast'" in found["learning_rate"]


def test_a_count_or_a_word_is_one_problem_naming_both() -> None:
    found = issues({**BASE, "cpu_streams": 0})
    assert found == {
        "cpu_streams": "cpu_streams = 0: should be greater than or equal to 1, or 'auto'"
    }
    assert validate({**BASE, "cpu_streams": "2"}).cpu_streams == 2  # as a flag gives it
    assert validate(BASE).cpu_streams == "auto"


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    found = issues({**BASE, "learning_rte": 1e-4})
    assert "did you mean 'learning_rate'?" in found["learning_rte"]


def test_missing_keys_are_named() -> None:
    assert set(issues({"rank": 4})) == {"model", "data", "out"}


@pytest.mark.parametrize(
    ("raw", "key", "needle"),
    [
        ({"epochs": 1, "iters": 5}, "iters", "not both"),
        ({"optimizer": "adam", "weight_decay": 0.1}, "weight_decay", "use adamw"),
        ({"momentum": 0.9}, "momentum", "only sgd"),
        ({"method": "full", "rank": 16}, "rank", "not full"),
        ({"method": "full", "lora_plus_ratio": 16}, "lora_plus_ratio", "not full"),
        ({"cycle_steps": 10}, "cycle_steps", "cosine_restarts"),
        ({"target_modules": []}, "target_modules", "at least one"),
    ],
)
def test_settings_that_would_be_ignored_are_refused(
    raw: dict[str, Any], key: str, needle: str
) -> None:
    assert needle in issues({**BASE, **raw})[key]


def test_lora_scale_is_alpha_over_rank_or_its_root() -> None:
    assert validate({**BASE, "rank": 16, "alpha": 32}).lora_scale == 2.0
    assert validate({**BASE, "rank": 16, "alpha": 32, "rslora": True}).lora_scale == 8.0


def test_yaml_flags_and_profiles_layer_in_order(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump({**BASE, "extends": "chat", "rank": 4, "epochs": 5}))
    c = load_config(f, {"rank": 32, "learning_rate": None})
    assert c.rank == 32  # flag over file
    assert c.epochs == 5  # file over profile
    assert c.max_seq_length == 2048 and c.warmup_steps == 10  # from the chat profile
    # iters given on top drops the epochs of the layers below instead of clashing with them.
    assert load_config(f, {"iters": 7}).epochs is None


def test_every_shipped_profile_is_a_valid_partial_config() -> None:
    assert profiles() == ["chat", "code", "instruction", "tool-use"]
    for name in profiles():
        assert isinstance(load_config(None, {**BASE, "extends": name}), TrainConfig)


def test_extends_chains_files_and_detects_cycles(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nrank: 2\n")
    (tmp_path / "b.yaml").write_text("extends: code\nrank: 3\nalpha: 7\n")
    c = load_config(tmp_path / "a.yaml", BASE)
    assert (c.rank, c.alpha, c.max_seq_length) == (2, 7.0, 4096)
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(Exception, match="cycle"):
        load_config(tmp_path / "a.yaml", BASE)
    with pytest.raises(ConfigIssues, match="extends = 'nope'"):
        load_config(None, {**BASE, "extends": "nope"})


def test_yaml_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("rank: 4\nalpha: [1,\n")
    with pytest.raises(Exception, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(f)


def test_a_key_given_twice_and_aliases_are_refused_naming_the_line(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("rank: 4\nalpha: 8\nrank: 16\n")
    with pytest.raises(
        Exception, match=r"twice.yaml:3: not valid YAML \(key 'rank' is given twice"
    ):
        load_config(twice)
    # the billion laughs: nine levels of aliases would expand to 10^9 items
    lol = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lol += [f"{c}: &{c} [{', '.join(['*' + p] * 10)}]" for p, c in itertools.pairwise("abcdefghi")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lol) + "\n")
    with pytest.raises(Exception, match=r"bomb.yaml:2: not valid YAML \(aliases"):
        load_config(bomb)


def test_every_config_key_is_a_flag_of_the_same_name() -> None:
    from ftx.cli.train import command

    flags = {o for p in command.params for o in p.opts}
    for key in TrainConfig.model_fields:
        assert "--" + key.replace("_", "-") in flags


def test_help_shows_each_flag_s_values_in_words() -> None:
    from click.testing import CliRunner

    from ftx.cli.train import command

    shown = CliRunner().invoke(command, ["--help"], terminal_width=200).output
    assert "--grad-checkpoint [N|true|false|attention|auto]" in shown
    assert "<class" not in shown


def test_cli_reports_config_problems_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "m", "--data", "d", "--out", "o", "--rank", "0"])
    assert info.value.code == 2
    assert "rank = 0: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_bad_config_and_bad_inputs_fail_before_mlx_is_imported(
    tmp_path: Path, prepared: Path
) -> None:
    # Both errors must come from the checks that run before the model (and MLX) load.
    code = f"""
import sys, ftx
for cfg in ({{"model": "m", "data": "d", "out": "o", "rank": 0}},
            {{"model": {str(tmp_path)!r}, "data": {str(prepared)!r}, "out": "o"}}):
    try:
        ftx.train(cfg)
    except ftx.ConfigError as e:
        print(type(e).__name__, str(e).splitlines()[1])
print("mlx" in sys.modules or "mlx.core" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ConfigIssues   rank = 0")
    assert "config.json" in lines[1]
    assert lines[-1] == "False"
