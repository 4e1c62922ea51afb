"""`prepare --ray` on a real two-node Ray cluster on 127.0.0.1: one worker is killed mid-run, Ray
restarts it and runs its shard again, and the merged artifact is the one-machine artifact byte
for byte."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ftx

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and a second node, one CPU each, on this machine; shut down at the end."""
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> list[str]:
    """Real records enough for each shard to take a moment: every alpaca and tool-call record,
    some twice."""
    d = tmp_path_factory.mktemp("ray-corpus")
    src = shared / "datasets" / "llama_factory"
    rows = json.loads((src / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    tools = json.loads((src / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    lines = [json.dumps(r) for r in rows + tools + rows[::5]]
    (d / "mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "tools.json").write_text(json.dumps(tools[:100]), encoding="utf-8")
    return [str(d / "mixed.jsonl"), str(d / "tools.json")]


def test_a_killed_worker_is_retried_and_the_merge_is_the_one_machine_artifact(
    cluster: Any, tmp_path: Path, tiny_model: Path, big_corpus: list[str]
) -> None:
    from ftx.distributed import prepare_on_ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    settings: dict[str, Any] = {"near_dedup": True, "valid": 0.05}
    local = ftx.prepare(big_corpus, out=tmp_path / "local", model=tiny_model, **settings)
    shards = 8
    seen: list[dict[str, float]] = []
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            result["report"] = prepare_on_ray(
                big_corpus,
                out=tmp_path / "merged",
                shards=shards,
                keep_shards=True,
                model=tiny_model,
                progress=seen.append,
                **settings,
            )
        except BaseException as e:  # reported by the test thread
            result["error"] = e

    driver = threading.Thread(target=drive)
    driver.start()
    shard_dir = tmp_path / "merged.shards"
    # Once the first shard is written, kill the worker on the second node mid-run.
    deadline = time.monotonic() + 300
    victim = None
    while driver.is_alive() and time.monotonic() < deadline:
        done = [d for d in shard_dir.glob("shard-*") if (d / "manifest.json").is_file()]
        if done:
            worker = ray.get_actor("ftx-shard-worker-1")
            victim = ray.get(worker.pid.remote())
            left = shards - len(done)
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.05)
    driver.join(timeout=600)
    assert not driver.is_alive()
    if "error" in result:
        raise result["error"]
    assert victim is not None and left > 0, "the worker was killed before the run ended"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    report = result["report"]
    assert report.manifest["run"]["nodes"] == 2 and report.manifest["run"]["shards"] == shards
    assert seen and max(p["records"] for p in seen) > 0, "progress came from the workers"
    written = sorted(p.name for p in shard_dir.iterdir())
    assert len(written) == shards, written
    want = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
    got = {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()}
    assert sorted(got) == sorted(want)
    assert [f for f in want if got[f] != want[f]] == []
    assert report.provenance == local.provenance and report.accepted == local.accepted


def test_the_cli_runs_on_the_cluster(
    cluster: Any, tmp_path: Path, tiny_model: Path, big_corpus: list[str]
) -> None:
    import subprocess
    import sys

    def ftx_cli(*args: str | Path) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "ftx.cli", "prepare", *map(str, args), "--json"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    common = [*big_corpus, "-m", tiny_model, "--valid", "10"]
    on_ray = ftx_cli(*common, "-o", tmp_path / "ray", "--ray", cluster.address, "--shards", 3)
    local = ftx_cli(*common, "-o", tmp_path / "local")
    assert on_ray["run"]["nodes"] == 2 and on_ray["run"]["shards"] == 3
    assert on_ray["provenance"] == local["provenance"]
    for p in (tmp_path / "local").iterdir():
        assert (tmp_path / "ray" / p.name).read_bytes() == p.read_bytes(), p.name
    assert not (tmp_path / "ray.shards").exists(), "the shards are removed after the merge"
