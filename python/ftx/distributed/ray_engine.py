"""The Ray body of ``prepare --ray``: a ``ShardWorker`` actor per node holds the engine, the driver
hands out shard indexes and merges. Ray's own retries make a dead worker's shard run again;
a shard is published by one rename, so a retried one replaces nothing but itself."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ftx import _core
from ftx.errors import FtxError
from ftx.model_folder import checked_tokenizer_folder
from ftx.preparation import PrepareReport, input_triples, is_url, merge

# The progress a worker sends is at most this often, per shard.
PROGRESS_EVERY_S = 0.5
# A worker process that dies is started again this many times, and its call retried.
RESTARTS = 3
COUNTERS = ("records", "accepted", "rejected", "duplicates", "tokens")


@ray.remote(num_cpus=0)
class Board:
    """The latest counters of every shard, for the driver's progress display."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[str, float]] = {}

    def update(self, shard: int, counts: dict[str, float]) -> None:
        self.counts[shard] = counts

    def total(self) -> dict[str, float]:
        return {k: sum(c.get(k, 0.0) for c in self.counts.values()) for k in COUNTERS}


@ray.remote(num_cpus=1, max_restarts=RESTARTS, max_task_retries=RESTARTS)
class ShardWorker:
    """One per node: the inputs (tables converted once), tokenizer and template loaded once,
    then any number of shards."""

    def __init__(
        self,
        inputs: list[str],
        settings: str,
        model: str | None,
        tokenizer: str | None,
        chat_template: str | None,
        threads: int,
        cwd: str,
    ) -> None:
        # The paths are the user's, as given where the command ran: the artifact names them so.
        if not Path(cwd).is_dir():
            raise FtxError(
                f"{cwd}, the folder ftx prepare --ray ran in, is not on this node: run it from "
                "a folder every node mounts at the same path"
            )
        os.chdir(cwd)
        # as prepare reads the folder (a tokenizer.model-only one converted once, on each node)
        if model is not None:
            model = str(checked_tokenizer_folder(Path(model)))
        self._tables = contextlib.ExitStack()
        triples = self._tables.enter_context(input_triples(inputs))
        self.engine = _core.ShardEngine(
            triples,
            settings,
            model_dir=model,
            tokenizer=tokenizer,
            chat_template=chat_template,
            threads=threads,
        )

    def pid(self) -> int:
        return os.getpid()

    def run(self, index: int, count: int, out_dir: str, board: Any) -> dict[str, Any]:
        sent = [0.0]

        def progress(counts: dict[str, float]) -> None:
            now = time.monotonic()
            if now - sent[0] >= PROGRESS_EVERY_S:
                sent[0] = now
                board.update.remote(index, counts)

        manifest = self.engine.run(index, count, out_dir, progress=progress)
        board.update.remote(
            index,
            {
                "records": manifest["rows"],
                "accepted": manifest["accepted"],
                "rejected": manifest["rejects"],
                "tokens": manifest["tokens"],
            },
        )
        return dict(manifest)


def _nodes() -> list[dict[str, Any]]:
    every: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return [n for n in every if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]


def run(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: Path,
    address: str | None,
    shards: int | None,
    shard_dir: Path | None,
    keep_shards: bool,
    model: str | Path | None,
    tokenizer: str | Path | None,
    chat_template: str | None,
    memory_mb: int | None,
    force: bool,
    progress: Callable[[dict[str, float]], None] | None,
    settings: dict[str, Any],
) -> PrepareReport:
    """See ``ftx.distributed.prepare_on_ray``."""
    started = time.monotonic()
    patterns = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(p) for p in inputs]
    # Local globs expanded here (what a worker is given is what the artifact names); a URL is
    # fetched by each worker.
    files = [str(f) for p in patterns for f in ([p] if is_url(p) else _core.expand_inputs([p]))]
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    nodes = _nodes()
    if not nodes:
        raise FtxError("the Ray cluster has no node with a CPU to prepare on")
    count = shards or 2 * len(nodes)
    where = (shard_dir or out.with_name(out.name + ".shards")).absolute()
    where.mkdir(parents=True, exist_ok=True)
    board = Board.remote()  # type: ignore[attr-defined]
    text = json.dumps(settings, default=str)
    paths = [None if p is None else str(p) for p in (model, tokenizer)]
    workers = [
        ShardWorker.options(  # type: ignore[attr-defined]
            name=f"ftx-shard-worker-{i}",
            # `pid` answers while `run` works (the engine releases the interpreter)
            max_concurrency=2,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=True),
        ).remote(files, text, *paths, chat_template, int(n["Resources"]["CPU"]), os.getcwd())
        for i, n in enumerate(nodes)
    ]
    todo = list(range(count))
    running: dict[Any, tuple[int, Any]] = {}
    dirs = [where / f"shard-{i:05d}-of-{count:05d}" for i in range(count)]
    idle = list(workers)
    while todo or running:
        while todo and idle:
            worker, index = idle.pop(), todo.pop(0)
            ref = worker.run.remote(index, count, str(dirs[index]), board)
            running[ref] = (index, worker)
        done, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in done:
            index, worker = running.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, FtxError):
                    raise cause from None
                raise FtxError(f"shard {index}/{count} failed on the cluster: {e}") from e
            idle.append(worker)
        if progress is not None:
            totals = ray.get(board.total.remote())
            progress({**totals, "elapsed_s": time.monotonic() - started})
    for w in workers:
        ray.kill(w)
    report = merge(dirs, out=out, memory_mb=memory_mb, force=force, progress=progress)
    # The run is the shards and the merge, not the merge alone.
    seconds = time.monotonic() - started
    run_info = dict(report.manifest.get("run", {}))
    run_info |= {
        "seconds": seconds,
        "records_per_s": report.records_read / seconds,
        "tokens_per_s": report.tokens / seconds,
        "shards": count,
        "nodes": len(nodes),
    }
    report = dataclasses.replace(
        report, seconds=seconds, manifest={**report.manifest, "run": run_info}
    )
    if not keep_shards:
        for d in dirs:
            if (d / "manifest.json").is_file():
                shutil.rmtree(d)
        with contextlib.suppress(OSError):
            where.rmdir()
    return report
