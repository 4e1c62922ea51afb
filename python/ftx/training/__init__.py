"""LoRA, DoRA and full fine-tuning on MLX; this module is ``ftx.train``, the face of ``ftx train``.

The face checks the config and every input with nothing heavy loaded (``inputs``), then hands
the run to ``run``, which imports MLX through ``ftx.runtime.mlx`` (the BLAS first). The rest of
the package: ``model`` (base loading and adapters), ``batching`` (the packing plan),
``forward`` (the loss), ``trainer`` (the loop), ``checkpoint``, ``optim``, ``schedules``,
``metrics``, ``memory`` (the estimate), ``fit`` (the plan checked against the memory before
any weight is read) and ``recompute`` (activation checkpointing, the chunked loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftx.config import TrainConfig, load_config, validate
from ftx.training.inputs import check_inputs

if TYPE_CHECKING:
    from ftx.training.memory import MemoryEstimate


@dataclass(frozen=True)
class TrainReport:
    """What ``train`` did (or, for a dry run, would do). ``memory`` is the estimate.
    ``run_report`` (the HTML report) and ``warnings`` come after the manifest is written, so
    its copy of this report has neither."""

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
    # what fit: auto changed to make the run fit (key: new value)
    fit_changes: dict[str, Any] = field(default_factory=dict)
    run_report: Path | None = None
    warnings: tuple[str, ...] = ()

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
        d["run_report"] = None if self.run_report is None else str(self.run_report)
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
    cfg = _config(config)
    inputs = check_inputs(cfg)

    from ftx.training import run

    return run.train(cfg, inputs, dry_run, progress, callbacks, resume)
