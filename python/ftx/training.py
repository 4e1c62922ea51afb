"""``ftx.train``: the Python face of ``ftx train``.

Order matters: the config and every input are checked first (nothing heavy loaded), then the
BLAS is chosen, and only then is MLX imported.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.config import TrainConfig, dump, load_config, validate

if TYPE_CHECKING:
    from ftx.tuner.memory import MemoryEstimate

RUN_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TrainReport:
    """What ``train`` did (or, for a dry run, would do). ``memory`` is the estimate."""

    run_dir: Path
    dry_run: bool
    method: str
    base: str
    blas: str
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
    extras: dict[str, Any] = field(default_factory=dict)

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
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def train(
    config: TrainConfig | Mapping[str, Any] | str | Path,
    *,
    dry_run: bool = False,
    progress: bool = False,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> TrainReport:
    """Fine-tunes ``config.model`` on the prepared ``config.data`` into ``config.out``.

    ``config`` is a ``TrainConfig``, a mapping of its keys, or a YAML file. The run folder gets
    ``adapters.safetensors`` + ``adapter_config.json`` (mlx-lm's format), ``metrics.jsonl``,
    the resolved ``config.yaml`` and ``manifest.json``. ``dry_run`` loads no weights and only
    reports parameters and the memory estimate. ``callbacks`` receive every step's metrics.
    """
    from ftx.tuner.blas import use_fast_blas
    from ftx.tuner.inputs import check_inputs

    cfg = _config(config)
    inputs = check_inputs(cfg)
    blas = use_fast_blas()

    import mlx.core as mx

    from ftx.data import load_dataset
    from ftx.tuner.batching import Plan
    from ftx.tuner.memory import estimate_memory
    from ftx.tuner.model import adapt, count_parameters, load_base

    mx.random.seed(cfg.seed)
    mx.reset_peak_memory()
    model, base = load_base(cfg, lazy=dry_run)
    adapter_meta = {"model": str(Path(cfg.model).resolve()), **adapt(model, cfg)}
    total, trainable = count_parameters(model)
    plan = Plan(
        load_dataset(cfg.data, "train"), cfg.batch_size, cfg.max_seq_length, cfg.packing, cfg.seed
    )
    setup = TrainReport(
        run_dir=Path(cfg.out),
        dry_run=True,
        method=cfg.method,
        base=base.describe(),
        blas=blas.describe(),
        total_parameters=total,
        trainable_parameters=trainable,
        memory=estimate_memory(model, cfg, plan, inputs.model_config),
        truncated_records=plan.truncated,
    )
    if dry_run:
        return setup
    return _run(cfg, model, plan, adapter_meta, inputs.splits, setup, progress, callbacks)


def _run(
    cfg: TrainConfig,
    model: Any,
    plan: Any,
    adapter_meta: dict[str, Any],
    splits: tuple[str, ...],
    setup: TrainReport,
    progress: bool,
    callbacks: Sequence[Callable[[dict[str, Any]], None]],
) -> TrainReport:
    import mlx.core as mx

    from ftx import __version__
    from ftx.data import load_dataset
    from ftx.tuner.batching import Plan
    from ftx.tuner.forward import Forward
    from ftx.tuner.metrics import MetricsLog, ProgressBar
    from ftx.tuner.model import save_adapters
    from ftx.tuner.trainer import Trainer

    forward = Forward(model, cfg.packing)
    forward.probe()

    def split_plan(name: str) -> Plan | None:
        if name not in splits:
            return None
        ds = load_dataset(cfg.data, name)
        return Plan(ds, cfg.batch_size, cfg.max_seq_length, cfg.packing, seed=None)

    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump(cfg), encoding="utf-8")
    manifest: dict[str, Any] = {
        "format": "ftx-run",
        "ftx_version": __version__,
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(),
        "inputs": {
            "model": str(Path(cfg.model).resolve()),
            "data": str(Path(cfg.data).resolve()),
            "data_provenance": plan.ds.manifest.get("provenance"),
            "tokenizer_sha256": plan.ds.tokenizer_sha256,
        },
        "config": "config.yaml",
    }
    _write_json(run_dir / RUN_MANIFEST, manifest)

    log = MetricsLog(run_dir / "metrics.jsonl")
    trainer = Trainer(
        model, forward, cfg, plan, split_plan("valid"), run_dir, adapter_meta, [log, *callbacks]
    )
    start = time.perf_counter()
    try:
        with ProgressBar(trainer.total_steps, enabled=progress) as bar:
            trainer.callbacks.append(bar)
            fit = trainer.fit()
    finally:
        log.close()
    save_adapters(model, run_dir, adapter_meta)
    test = split_plan("test")
    test_loss = trainer.evaluate(test) if test is not None else None
    t = fit.totals
    report = replace(
        setup,
        dry_run=False,
        steps=t.steps,
        epochs=fit.epochs,
        train_loss=fit.train_loss,
        val_loss=fit.val_loss,
        test_loss=test_loss,
        grad_norm=fit.grad_norm,
        trained_tokens=t.trained_tokens,
        processed_tokens=t.real_tokens,
        computed_tokens=t.computed_tokens,
        seconds=t.seconds,
        peak_memory=mx.get_peak_memory(),
        extras={"wall_seconds": time.perf_counter() - start},
    )
    manifest["finished"] = datetime.now(timezone.utc).isoformat()
    manifest["report"] = report.to_dict()
    _write_json(run_dir / RUN_MANIFEST, manifest)
    return report
