"""A shortened ``ftx quickstart``: the real SmolLM2-135M-Instruct really trained on ftx's
tool-calling task, and scored on held-out phrasings before and after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftx.cli import cli
from ftx.errors import ConfigError, FtxFileNotFoundError

pytestmark = [pytest.mark.mlx, pytest.mark.slow]

# Half the default task and run, so the suite stays within a few minutes on 2 cores.
SHORT = {
    "--train-records": "48",
    "--test-records": "16",
    "--iters": "12",
}


def test_shortened_quickstart_lifts_held_out_tool_call_exact_match(tmp_path: Path) -> None:
    pytest.importorskip("mlx.core")
    from ftx.default_model import embedded_gguf

    try:
        embedded_gguf()
    except FtxFileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "qs"
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
    base, adapted = ev["base"], ev["adapted"]
    # The base model never writes the task's call format; the adapter must, on phrasings it
    # was not trained on.
    gain = adapted["generation"]["exact_match"] - base["generation"]["exact_match"]
    assert gain >= 0.3, (base["generation"], adapted["generation"])
    assert ev["delta"]["exact_match"] == pytest.approx(gain)
    assert adapted["loss"]["loss"] < base["loss"]["loss"]
    assert report["converted"] is True
    assert "float32" in report["compute"]  # the fast CPU path was chosen, and said so
    assert json.loads((out / "quickstart.json").read_text())["finished"] is True
    assert Path(report["adapter"]).is_file()
    rows = [json.loads(line) for line in (Path(report["results"]) / "examples.jsonl").open()]
    assert len(rows) == 2 * int(SHORT["--test-records"])


def test_quickstart_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from ftx.quickstart import quickstart

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no quickstart wrote"):
        quickstart(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_quickstart_killed_halfway_leaves_a_folder_the_next_one_reclaims(tmp_path: Path) -> None:
    from ftx.quickstart import Settings, quickstart

    out, too_many = tmp_path / "out", Settings(test_records=10_000)
    # An impossible split size fails after the folder is claimed, as a crash would.
    with pytest.raises(ConfigError, match="cannot draw"):
        quickstart(out, settings=too_many, cache=tmp_path / "cache")
    manifest = json.loads((out / "quickstart.json").read_text())
    assert manifest == {"format": "ftx-quickstart", "finished": False}
    with pytest.raises(ConfigError, match="cannot draw"):  # not "no quickstart wrote"
        quickstart(out, settings=too_many, cache=tmp_path / "cache")
