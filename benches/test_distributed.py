"""`ftx prepare` on one machine against its shard + merge path and against Ray with one and two
worker nodes, side by side in one run on the standard corpus; and the merge's peak memory at 1x
and 4x the corpus.

Targets (issue 22): the merged artifact is byte for byte the local one (every file, every run);
shard + merge with one worker within 1.3x the local time; `ftx merge`'s peak RSS at 4x the
corpus within 10% of its peak at 1x. Settings: near-dedup on (exact and near duplicates both
resolved across shards), the rest default; FTX_NUM_THREADS=2 (this machine's cores). The Ray
runs use a local cluster (`ray.cluster_utils.Cluster`): one node with 2 CPUs, or two nodes with
1 CPU each; its start is not timed, the workers' start (tokenizer load) is.
Run: .venv/bin/python -m pytest benches/test_distributed.py -p no:cacheprovider -q -s
Results: .benchmarks/data/distributed.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _corpus import CACHE, model_dir

ENV = os.environ | {"FTX_NUM_THREADS": "2"}
MODEL = "qwen3"
# The merge's partition budget for the memory check: below what the 1x corpus needs, so
# both runs hold partitions of this size.
MEMORY_MB = 8
# Peak RSS is taken as the median of this many merges (it moves by a few MiB run to run).
RSS_RUNS = 3
SETTINGS = ["--near-dedup"]


def _ftx(*args: str | Path) -> tuple[float, dict[str, Any], float]:
    """An `ftx` command as a subprocess: its wall time, its JSON, its peak RSS in MiB."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
        "print(p.stdout)\n"
        "sys.exit(p.returncode)\n"
    )
    command = [sys.executable, "-m", "ftx.cli", *map(str, args), "--json"]
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", code, *command], capture_output=True, text=True, env=ENV
    )
    secs = time.perf_counter() - t
    assert p.returncode == 0, p.stderr
    rss, _, out = p.stdout.partition("\n")
    return secs, json.loads(out), float(rss)


def _same(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def _tokens(report: dict[str, Any]) -> int:
    return sum(s["tokens"] for s in report["splits"].values())


def _ray(corpus: Path, model: Path, out: Path, nodes: int) -> dict[str, float]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from ftx.distributed import prepare_on_ray

    cpus = 2 // nodes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        t = time.perf_counter()
        report = prepare_on_ray([str(corpus)], out=out, model=model, force=True, near_dedup=True)
        secs = time.perf_counter() - t
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"seconds": secs, "tok_per_s": report.tokens / secs, "shards": 2 * nodes}


def test_shards_and_ray_against_one_machine(corpus: Path, corpus_4x: Path) -> None:
    model = model_dir(MODEL)
    work = CACHE / "distributed"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, Any] = {"corpus": str(corpus), "model": MODEL, "settings": SETTINGS}

    secs, local, _ = _ftx("prepare", corpus, "-m", model, "-o", work / "local", *SETTINGS)
    tokens = _tokens(local)
    results["local"] = {"seconds": secs, "tok_per_s": tokens / secs}

    shard_s, _, _ = _ftx(
        "prepare", corpus, "-m", model, "--shard", "0/1", "-o", work / "s1", *SETTINGS
    )
    merge_s, _, _ = _ftx("merge", work / "s1", "-o", work / "m1", "--memory-mb", MEMORY_MB)
    assert _same(work / "local", work / "m1"), "shard + merge differs from one machine"
    total = shard_s + merge_s
    results["shard_merge_1"] = {
        "shard_seconds": shard_s,
        "merge_seconds": merge_s,
        "seconds": total,
        "tok_per_s": tokens / total,
        "over_local": total / results["local"]["seconds"],
    }

    for nodes in (1, 2):
        out = work / f"ray{nodes}"
        results[f"ray_{nodes}_node"] = _ray(corpus, model, out, nodes)
        results[f"ray_{nodes}_node"]["over_local"] = (
            results[f"ray_{nodes}_node"]["seconds"] / results["local"]["seconds"]
        )
        assert _same(work / "local", out), f"Ray with {nodes} node(s) differs from one machine"

    _ftx("prepare", corpus_4x, "-m", model, "--shard", "0/1", "-o", work / "s4", *SETTINGS)
    rss: dict[str, float] = {}
    merge_4x_s = 0.0
    for name in ("1", "4"):
        runs = [
            _ftx(
                "merge",
                work / f"s{name}",
                "-o",
                work / f"m{name}",
                "--memory-mb",
                MEMORY_MB,
                "--force",
            )
            for _ in range(RSS_RUNS)
        ]
        rss[name] = statistics.median(r[2] for r in runs)
        merged_4x, merge_4x_s = runs[0][1], min(r[0] for r in runs)
    rss_1x, rss_4x = rss["1"], rss["4"]
    results["merge_rss"] = {
        "memory_mb": MEMORY_MB,
        "records_1x": local["records_read"],
        "records_4x": merged_4x["records_read"],
        "rss_mb_1x": rss_1x,
        "rss_mb_4x": rss_4x,
        "ratio": rss_4x / rss_1x,
        "merge_seconds_4x": merge_4x_s,
    }
    (CACHE / "distributed.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    assert results["shard_merge_1"]["over_local"] <= 1.3
    assert abs(results["merge_rss"]["ratio"] - 1) <= 0.10
