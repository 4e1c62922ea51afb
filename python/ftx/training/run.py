"""The body of ``ftx.train``: after the face has checked the config and the inputs, the model is
loaded, adapted and trained, and the run folder written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftx.runtime.mlx import BLAS, mx

from ftx import __version__
from ftx.config import TrainConfig, config_diff, dump, read_yaml, resolved
from ftx.data import load_dataset
from ftx.errors import ConfigError
from ftx.files import write_atomic, write_text_atomic
from ftx.run_folder import RUN_FORMAT, RUN_MANIFEST
from ftx.run_report import try_write_report
from ftx.runtime.blas import blas_threads
from ftx.runtime.streams import Streams, choose_streams, cores
from ftx.training import TrainReport, checkpoint
from ftx.training.attention import efficient_attention
from ftx.training.batching import Plan
from ftx.training.fit import Built, memory_limits, settle
from ftx.training.forward import Forward
from ftx.training.inputs import Inputs
from ftx.training.metrics import MetricsLog, ProgressBar
from ftx.training.model import (
    ADAPTER_CONFIG,
    ADAPTERS,
    adapt,
    count_parameters,
    load_base,
    on_gpu,
    trainable_parameters,
)
from ftx.training.recompute import checkpoint_blocks
from ftx.training.trackers import Reporting
from ftx.training.trainer import Trainer


def train(
    cfg: TrainConfig,
    inputs: Inputs,
    dry_run: bool,
    progress: bool,
    callbacks: Sequence[Callable[[dict[str, Any]], None]],
    resume: bool | None,
) -> TrainReport:
    """``ftx.training.train`` once its inputs are checked."""

    mx.random.seed(cfg.seed)
    mx.reset_peak_memory()
    train_split = load_dataset(cfg.data, "train", inputs.embedding_rows)

    def build(c: TrainConfig) -> Built:
        # Lazy: no weight is read until the plan is settled.
        model, base = load_base(c, lazy=True)
        meta = {"model": str(Path(c.model).resolve()), **adapt(model, c)}
        plan = Plan(train_split, c.batch_size, c.max_seq_length, c.packing, c.seed)
        return model, base, meta, plan

    def streams_of(c: TrainConfig) -> Streams:
        return choose_streams(c.cpu_streams, c.batch_size, cores(), on_gpu(), BLAS)

    fitted = settle(cfg, inputs.model_config, build, lambda c: streams_of(c).count)
    cfg, model, plan = fitted.config, fitted.model, fitted.plan
    for callback in callbacks:
        callback({"event": "plan", "memory": fitted.memory.to_dict(), "changes": fitted.changes})
    total, trainable = count_parameters(model)
    streams = streams_of(cfg)
    setup = TrainReport(
        run_dir=Path(cfg.out),
        dry_run=True,
        method=cfg.method,
        base=fitted.base.describe(),
        blas=BLAS.describe(),
        streams=streams.describe(),
        total_parameters=total,
        trainable_parameters=trainable,
        memory=fitted.memory,
        truncated_records=plan.truncated,
        fit_changes=fitted.changes,
    )
    for name in inputs.splits:  # the train split was checked as it loaded
        if name != "train":
            load_dataset(cfg.data, name, inputs.embedding_rows)
    if dry_run:
        return setup
    mx.eval(model.parameters())
    before = blas_threads(BLAS, streams.blas_threads)
    try:
        # As the plan counted it (MemoryEstimate.chunked_attention).
        chunked = fitted.memory.chunked_attention
        attention = efficient_attention() if chunked else nullcontext()
        with memory_limits(fitted.memory) as headroom, attention:
            return _run(
                cfg,
                model,
                plan,
                fitted.adapter_meta,
                inputs.splits,
                setup,
                progress,
                callbacks,
                resume,
                streams.count,
                headroom,
            )
    finally:
        if streams.blas_threads is not None:
            blas_threads(BLAS, before)  # a caller's process gets its BLAS threads back


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def _resume_point(cfg: TrainConfig, provenance: str | None, resume: bool | None) -> Any:
    """The checkpoint to continue from (None: start fresh). ``resume``: True requires one,
    False refuses a folder that has any, None takes one if there is. Refuses a run folder made
    with other data or a config that differs beyond what a resume may change, with the diff."""
    run_dir = Path(cfg.out)
    if resume is False:
        if checkpoint.steps(run_dir):
            raise ConfigError(f"{run_dir}: --no-resume, but it holds checkpoints; use a new folder")
        return None
    ckpt, skipped = checkpoint.latest(run_dir)
    if ckpt is None:
        if resume:
            why = f" ({'; '.join(skipped)})" if skipped else ""
            raise ConfigError(f"{run_dir}: --resume, but no valid checkpoint to resume from{why}")
        if skipped:
            # Starting over would train from step 0 and then prune what is there.
            raise ConfigError(
                f"{run_dir}: every checkpoint there is damaged ({'; '.join(skipped)}); nothing "
                "was resumed or overwritten: move them away to start over, or use a new run folder"
            )
        before = run_dir / "config.yaml"
        old = read_yaml(before) if before.is_file() else None
    else:
        old = ckpt.state["config"]
        if ckpt.state["data_provenance"] != provenance:
            raise ConfigError(
                f"{run_dir}: cannot resume: the data changed (provenance "
                f"{ckpt.state['data_provenance']} -> {provenance}); use a new run folder"
            )
    if old is not None and (diff := config_diff(old, resolved(cfg))):
        raise ConfigError(
            f"{run_dir}: cannot resume with a changed config (only iters, epochs and reporting "
            "may change); changed:\n  " + "\n  ".join(diff)
        )
    return ckpt


def _run(
    cfg: TrainConfig,
    model: Any,
    plan: Any,
    adapter_meta: dict[str, Any],
    splits: tuple[str, ...],
    setup: TrainReport,
    progress: bool,
    callbacks: Sequence[Callable[[dict[str, Any]], None]],
    resume: bool | None,
    streams: int,
    headroom: int | None,
) -> TrainReport:
    forward = Forward(model, cfg.packing, setup.memory.loss_chunk)
    forward.probe()
    # As many of the trained blocks as the plan counted, from the first (MemoryEstimate).
    trained = list(model.layers[-adapter_meta["num_layers"] :])
    checkpointed = setup.memory.checkpointed_blocks
    restore_blocks = checkpoint_blocks(trained[:checkpointed]) if checkpointed else None

    def split_plan(name: str) -> Plan | None:
        if name not in splits:
            return None
        ds = load_dataset(cfg.data, name)
        return Plan(ds, cfg.batch_size, cfg.max_seq_length, cfg.packing, seed=None)

    run_dir = Path(cfg.out)
    provenance = plan.ds.manifest.get("provenance")
    ckpt = _resume_point(cfg, provenance, resume)
    group = mx.distributed.init()
    # Data parallel (mlx.launch): every rank has read the run folder before rank 0 writes it.
    main = group.rank() == 0
    _barrier(group)
    manifest: dict[str, Any] = {
        "format": RUN_FORMAT,
        "ftx_version": __version__,
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(),
        "resumed_from": None if ckpt is None else ckpt.step,
        "inputs": {
            "model": str(Path(cfg.model).resolve()),
            "data": str(Path(cfg.data).resolve()),
            "data_provenance": provenance,
            "tokenizer_sha256": plan.ds.tokenizer_sha256,
        },
        "config": "config.yaml",
    }
    if main:
        # The manifest first: from then on a rerun knows this folder as a run to resume.
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / RUN_MANIFEST, manifest)
        checkpoint.remove_partial(run_dir)
        write_text_atomic(run_dir / "config.yaml", dump(cfg))

    trainer = Trainer(
        model,
        forward,
        cfg,
        plan,
        split_plan("valid"),
        run_dir,
        adapter_meta,
        [],
        provenance=provenance,
        resume=ckpt,
        group=group,
        streams=streams,
        cache_limit=headroom,
    )
    # metrics.jsonl restarts from what the checkpoint saw, so it never shows a step twice.
    log = MetricsLog(run_dir / "metrics.jsonl", trainer.state.metrics) if main else None
    # Only rank 0 reports; a tracker that fails is dropped, and the run goes on.
    names = cfg.report_to if main else ()
    reporting = Reporting(names, resolved(cfg), run_dir, trainer.state.step)
    trainer.callbacks += [*([log] if log is not None else []), *callbacks, reporting]
    with reporting:
        show = progress and main
        try:
            with ProgressBar(trainer.total_steps, enabled=show, start=trainer.state.step) as bar:
                trainer.callbacks.append(bar)
                state = trainer.fit()
        finally:
            if log is not None:
                log.close()
            if restore_blocks is not None:
                restore_blocks()
        _barrier(group)  # the last checkpoint is written before any rank reads the best one

        # The final adapter is the best by validation loss when there was a validation.
        best = state.best_step
        if best is not None:
            model.load_weights(checkpoint.load(checkpoint.folder(run_dir, best)).weights(), False)
        weights = trainable_parameters(model)
        if main:
            write_atomic(run_dir / ADAPTERS, lambda p: mx.save_safetensors(str(p), weights))
            write_text_atomic(run_dir / ADAPTER_CONFIG, json.dumps(adapter_meta, indent=2) + "\n")
        test = split_plan("test")
        test_loss = trainer.evaluate(test) if test is not None else None
        t = state.totals
        report = replace(
            setup,
            dry_run=False,
            steps=state.step,
            epochs=state.step / trainer.steps_per_epoch,
            train_loss=state.train_loss,
            val_loss=state.val_loss,
            test_loss=test_loss,
            grad_norm=state.grad_norm,
            trained_tokens=t.trained_tokens,
            processed_tokens=t.real_tokens,
            computed_tokens=t.computed_tokens,
            seconds=t.seconds,
            peak_memory=mx.get_peak_memory(),
            stop_reason=state.stop_reason,
            best_step=best,
            best_val_loss=state.best_val,
            skipped_steps=state.skipped_steps,
            resumed_from=manifest["resumed_from"],
            ranks=group.size(),
            rank=group.rank(),
        )
        if main:
            manifest["finished"] = datetime.now(timezone.utc).isoformat()
            manifest["report"] = report.to_dict()
            _write_json(run_dir / RUN_MANIFEST, manifest)
            html, notes = try_write_report(run_dir)  # reads the manifest just written
            report = replace(report, run_report=html, warnings=tuple(notes))
        reporting.finish(report.to_dict())
    return report


def _barrier(group: Any) -> None:
    if group.size() > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))
