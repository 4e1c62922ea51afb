"""``ftx report`` and the report every training run writes: what the page holds, and what
happens when the run folder lacks something."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftx.run_report import write_report
from ftx.run_report.charts import CHARTS

pytestmark = pytest.mark.mlx


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    return copy


def test_the_run_folder_report_has_every_chart_the_markers_and_the_evaluation(
    run_dir: Path,
) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<h3>Generations</h3>" in page and "No evaluation." not in page
    manifest = json.loads((run_dir / "manifest.json").read_text())
    best = manifest["report"]["best_step"]
    assert manifest["report"]["stop_reason"].startswith("early stopping") and best is not None
    for name in CHARTS:
        assert f'id="chart-{name}"' in page, name
    assert f"best step {best}" in page and "early stopping" in page
    # max_seq_length is drawn on the length histogram; the config table shows the settings.
    assert "max_seq_length 64" in page and "<td>patience</td><td>2</td>" in page
    # plotly.js is in the page itself, and nothing is loaded from a URL.
    assert "<script src" not in page and page.count("Plotly.newPlot") == len(CHARTS)


def test_the_report_shows_the_evaluation_base_next_to_adapted(
    run_dir: Path, tmp_path: Path
) -> None:
    r = write_report(run_dir, out=tmp_path / "r.html")
    assert r.charts == list(CHARTS) and r.warnings == [] and r.images == []
    page = r.html.read_text(encoding="utf-8")
    lines = [json.loads(x) for x in (run_dir / "eval" / "examples.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        for side in ("base", "adapted"):
            assert f"<pre>{html.escape(line[side]['output'])}</pre>" in page
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    loss = results["adapted"]["loss"]["perplexity"]
    assert f"<td>perplexity</td><td>{results['base']['loss']['perplexity']:.4f}</td>" in page
    assert f"<td>{loss:.4f}</td>" in page and "<td>exact match</td>" in page


def test_cli_writes_the_report_where_asked_and_prints_json(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere.html"
    done = _cli(run_dir, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["html"] == str(out) and result["charts"] == list(CHARTS)
    assert out.stat().st_size > 1_000_000  # plotly.js inline


def test_a_run_folder_without_metrics_is_a_clear_error(run_dir: Path, tmp_path: Path) -> None:
    copy = _copy(run_dir, tmp_path)
    (copy / "metrics.jsonl").unlink()
    done = _cli(copy)
    assert done.returncode == 2
    assert f"{copy}: no metrics.jsonl; not a run folder of `ftx train`" in done.stderr
    assert "Traceback" not in done.stderr

    (copy / "metrics.jsonl").write_text("")
    done = _cli(copy)
    assert done.returncode == 1 and "metrics.jsonl: no step was logged" in done.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    done = _cli(empty)
    assert done.returncode == 2 and "no manifest.json or metrics.jsonl" in done.stderr
    assert not (empty / "report.html").exists()


def test_a_run_whose_data_is_gone_is_reported_without_it(run_dir: Path, tmp_path: Path) -> None:
    copy = _copy(run_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    gone = tmp_path / "moved-away"
    manifest["inputs"]["data"] = str(gone)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "report.html").unlink()

    done = _cli(copy)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and str(gone) in done.stderr
    page = (copy / "report.html").read_text(encoding="utf-8")
    assert "Missing from this report" in page and html.escape(str(gone)) in page
    assert 'id="chart-lengths"' not in page and 'id="chart-loss"' in page


# plotly cannot be imported, as after `pip install ftx[trainer]` without the report extra.
WITHOUT_PLOTLY = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "plotly":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
from ftx.cli import main
main(sys.argv[1:])
"""


def test_a_run_without_the_report_extra_succeeds_with_a_warning(
    tiny_llama: Path, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", tiny_llama, "--data", prepared, "--out", out, "--iters", "2"]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PLOTLY, *map(str, args), "--batch-size", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["steps"] == 2 and result["run_report"] is None
    assert result["warnings"] == [
        "the run report was not written: the run report cannot import what it needs (No module "
        "named 'plotly'): pip install 'ftx[report]'"
    ]
    assert (out / "adapters.safetensors").is_file() and not (out / "report.html").exists()
