"""``ftx prepare --ray``: prepare's shards run across a Ray cluster, then merged into the artifact
one machine would write, byte for byte. The face: options and checks, no Ray import (the body,
``ray_engine``, imports it on the call)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ftx.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ftx.preparation import PrepareReport, PrepareSettings


def prepare_on_ray(
    inputs: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    address: str | None = None,
    shards: int | None = None,
    shard_dir: str | Path | None = None,
    keep_shards: bool = False,
    model: str | Path | None = None,
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    memory_mb: int | None = None,
    force: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
    **settings: Unpack[PrepareSettings],
) -> PrepareReport:
    """``prepare`` on a Ray cluster: one worker per node (it loads the tokenizer and template
    once) runs the shards, each a byte range of the inputs, into ``shard_dir`` (default
    ``OUT.shards``, a place every node and this machine see); a worker that dies is restarted
    and its shard run again by Ray; the shards are then merged here into ``out``.

    ``address`` is the cluster's (``ray.init``'s: ``"auto"``, ``"ray://host:10001"``, ...; none
    starts Ray on this machine); ``shards`` defaults to twice the nodes with CPUs. The shards
    are removed after the merge unless ``keep_shards``. The result is the artifact
    ``ftx.prepare`` writes for the same inputs and settings."""
    from ftx.preparation import check_settings

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray needs Ray: pip install 'ftx[ray]'")
    if shards is not None and (not isinstance(shards, int) or shards < 1):
        raise ConfigError(f"shards = {shards!r}: must be a whole number, 1 or more")
    check_settings(settings, "ftx.prepare")
    from ftx.distributed.ray_engine import run

    return run(
        inputs,
        out=Path(out),
        address=address,
        shards=shards,
        shard_dir=None if shard_dir is None else Path(shard_dir),
        keep_shards=keep_shards,
        model=model,
        tokenizer=tokenizer,
        chat_template=chat_template,
        memory_mb=memory_mb,
        force=force,
        progress=progress,
        settings=dict(settings),
    )
