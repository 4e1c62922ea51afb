"""A shortened ``ftx quickstart``: the real SmolLM2-135M-Instruct really trained on ftx's
tool-calling task, and scored on held-out phrasings before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftx.cli import cli
from ftx.errors import ConfigError, FtxFileNotFoundError, FtxIOError
from ftx.runtime.blas import use_fast_blas

use_fast_blas()  # before anything imports MLX, as `ftx quickstart` does

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

# Two thirds of the default training, on less data and fewer test requests: about three
# minutes on 2 cores.
SHORT = {
    "--train-records": "48",
    "--test-records": "16",
    "--iters": "12",
}


def test_shortened_quickstart_lifts_held_out_tool_call_metrics(tmp_path: Path) -> None:
    from ftx.default_model import FILE, WHEEL_SHA256, embedded_gguf

    try:
        gguf = embedded_gguf()
    except FtxFileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "qs"
    # A user cache of its own, so the model is converted now, with the GGUF already fetched.
    kept = tmp_path / "cache" / "ftx" / "downloads" / WHEEL_SHA256[:16] / FILE
    kept.parent.mkdir(parents=True)
    kept.symlink_to(gguf)
    flags = [f for kv in SHORT.items() for f in kv]
    done = CliRunner().invoke(
        cli,
        ["quickstart", "--out", str(out), *flags, "--json"],
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    ev = report["evaluation"]
    base, adapted = ev["base"]["generation"], ev["adapted"]["generation"]
    # The base model never writes the task's call format. After 12 steps the adapter writes
    # it on phrasings it was not trained on (measured here with LoRA on 8 blocks: JSON valid
    # 0% -> 100%, function name 0% -> 69%, exact match 0% -> 12.5%; the full quickstart goes
    # further).
    assert adapted["tool_json_valid"] - base["tool_json_valid"] >= 0.5, (base, adapted)
    assert adapted["tool_name_accuracy"] - base["tool_name_accuracy"] >= 0.4, (base, adapted)
    assert adapted["exact_match"] > base["exact_match"], (base, adapted)
    assert ev["delta"]["exact_match"] == pytest.approx(adapted["exact_match"] - base["exact_match"])
    assert ev["adapted"]["loss"]["loss"] < ev["base"]["loss"]["loss"]
    assert report["converted"] is True
    assert "float32" in report["compute"]  # the fast CPU path was chosen, and said so
    assert json.loads((out / "quickstart.json").read_text())["finished"] is True
    assert Path(report["adapter"]).is_file()
    lines = (Path(report["results"]) / "examples.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == int(SHORT["--test-records"])
    assert all("output" in r["base"] and "output" in r["adapted"] for r in rows)


def test_quickstart_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from ftx.quickstart import quickstart

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no quickstart wrote"):
        quickstart(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_quickstart_killed_halfway_leaves_a_folder_the_next_one_reclaims(tmp_path: Path) -> None:
    from ftx.quickstart import quickstart

    out, cache = tmp_path / "out", tmp_path / "not-a-folder"
    cache.write_text("")
    # A cache that cannot be written fails after the folder is claimed, as a crash would.
    with pytest.raises(FtxIOError, match="not-a-folder"):
        quickstart(out, cache=cache)
    manifest = json.loads((out / "quickstart.json").read_text())
    assert manifest == {"format": "ftx-quickstart", "finished": False}
    with pytest.raises(FtxIOError):  # not ConfigError("... no quickstart wrote ...")
        quickstart(out, cache=cache)
