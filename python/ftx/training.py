"""``ftx.train``: the Python face of ``ftx train``.

Order matters: the config and every input are checked first (nothing heavy loaded), then the
BLAS is chosen, and only then is MLX imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.config import TrainConfig, dump, load_config, validate

if TYPE_CHECKING:
    from ftx.tuner.memory import MemoryEstimate


@dataclass(frozen=True)
class TrainReport:
    """What ``train`` did (or, for a dry run, would do). ``memory`` is the estimate."""

    run_dir: Path
    dry_run: bool
    method: str
    base: str
    blas: str
    streams: str
    total_parameters: int
    trainable_parameters: int
    memory: MemoryEstimate
    steps: int = 0
    epochs: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None
    test_loss: float | None = None
    grad_norm: float | None = None
    trained_tokens: int = 0
    processed_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    peak_memory: int = 0
    truncated_records: int = 0
    stop_reason: str | None = None
    best_step: int | None = None
    best_val_loss: float | None = None
    skipped_steps: int = 0
    resumed_from: int | None = None
    ranks: int = 1
    rank: int = 0

    @property
    def trained_tokens_per_s(self) -> float:
        return self.trained_tokens / self.seconds if self.seconds else 0.0

    @property
    def processed_tokens_per_s(self) -> float:
        return self.processed_tokens / self.seconds if self.seconds else 0.0

    @property
    def packing_efficiency(self) -> float:
        """Real tokens over computed tokens (the rest is padding)."""
        return self.processed_tokens / self.computed_tokens if self.computed_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d["memory"] = self.memory.to_dict()
        for key in ("trained_tokens_per_s", "processed_tokens_per_s", "packing_efficiency"):
            d[key] = getattr(self, key)
        return d


def _config(config: TrainConfig | Mapping[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, str | Path):
        return load_config(config)
    return validate(config)


def _write_json(path: Path, obj: Any) -> None:
    from ftx.files import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def train(
    config: TrainConfig | Mapping[str, Any] | str | Path,
    *,
    dry_run: bool = False,
    progress: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    resume: bool | None = None,
) -> TrainReport:
    """Fine-tunes ``config.model`` on the prepared ``config.data`` into ``config.out``.

    ``config`` is a ``TrainConfig``, a mapping of its keys, or a YAML file. The run folder gets
    ``adapters.safetensors`` + ``adapter_config.json`` (mlx-lm's format), ``metrics.jsonl``,
    the resolved ``config.yaml`` and ``manifest.json``. ``dry_run`` loads no weights and only
    reports parameters and the memory estimate. ``callbacks`` receive every step's metrics.
    """
    from ftx.runtime.blas import blas_threads, use_fast_blas
    from ftx.tuner.inputs import check_inputs

    cfg = _config(config)
    inputs = check_inputs(cfg)
    blas = use_fast_blas()

    import mlx.core as mx

    from ftx.data import load_dataset
    from ftx.runtime.streams import choose_streams, cores
    from ftx.tuner.batching import Plan
    from ftx.tuner.memory import estimate_memory
    from ftx.tuner.model import adapt, count_parameters, load_base, on_gpu

    mx.random.seed(cfg.seed)
    mx.reset_peak_memory()
    model, base = load_base(cfg, lazy=dry_run)
    adapter_meta = {"model": str(Path(cfg.model).resolve()), **adapt(model, cfg)}
    total, trainable = count_parameters(model)
    plan = Plan(
        load_dataset(cfg.data, "train", inputs.embedding_rows),
        cfg.batch_size,
        cfg.max_seq_length,
        cfg.packing,
        cfg.seed,
    )
    streams = choose_streams(cfg.cpu_streams, cfg.batch_size, cores(), on_gpu(), blas)
    setup = TrainReport(
        run_dir=Path(cfg.out),
        dry_run=True,
        method=cfg.method,
        base=base.describe(),
        blas=blas.describe(),
        streams=streams.describe(),
        total_parameters=total,
        trainable_parameters=trainable,
        memory=estimate_memory(model, cfg, plan, inputs.model_config),
        truncated_records=plan.truncated,
    )
    for name in inputs.splits:  # the train split was checked as it loaded
        if name != "train":
            load_dataset(cfg.data, name, inputs.embedding_rows)
    if dry_run:
        return setup
    before = blas_threads(blas, streams.blas_threads)
    try:
        return _run(
            cfg,
            model,
            plan,
            adapter_meta,
            inputs.splits,
            setup,
            progress,
            callbacks,
            resume,
            streams.count,
        )
    finally:
        if streams.blas_threads is not None:
            blas_threads(blas, before)  # a caller's process gets its BLAS threads back


def _resume_point(cfg: TrainConfig, provenance: str | None, resume: bool | None) -> Any:
    """The checkpoint to continue from (None: start fresh). ``resume``: True requires one,
    False refuses a folder that has any, None takes one if there is. Refuses a run folder made
    with other data or a config that differs beyond what a resume may change, with the diff."""
    from ftx.config import config_diff, read_yaml, resolved
    from ftx.errors import ConfigError
    from ftx.tuner import checkpoint

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
) -> TrainReport:
    import mlx.core as mx

    from ftx import __version__
    from ftx.data import load_dataset
    from ftx.files import write_atomic, write_text_atomic
    from ftx.tuner import checkpoint
    from ftx.tuner.batching import Plan
    from ftx.tuner.forward import Forward
    from ftx.tuner.inputs import RUN_FORMAT, RUN_MANIFEST
    from ftx.tuner.metrics import MetricsLog, ProgressBar
    from ftx.tuner.model import ADAPTER_CONFIG, ADAPTERS, trainable_parameters
    from ftx.tuner.trainer import Trainer

    forward = Forward(model, cfg.packing)
    forward.probe()

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
    )
    # metrics.jsonl restarts from what the checkpoint saw, so it never shows a step twice.
    log = MetricsLog(run_dir / "metrics.jsonl", trainer.state.metrics) if main else None
    trainer.callbacks += [log, *callbacks] if log is not None else [*callbacks]
    show = progress and main
    try:
        with ProgressBar(trainer.total_steps, enabled=show, start=trainer.state.step) as bar:
            trainer.callbacks.append(bar)
            state = trainer.fit()
    finally:
        if log is not None:
            log.close()
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
    return report


def _barrier(group: Any) -> None:
    import mlx.core as mx

    if group.size() > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))
