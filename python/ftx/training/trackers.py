"""Reports of a run to the trackers users already run: TensorBoard, Weights & Biases, MLflow.

Each tracker named in ``report_to`` gets the resolved config once, every step line of
``metrics.jsonl`` (same names, same steps) and, at the end, the run's summary
(``TrainReport.to_dict()``). Each backend's package is an optional extra, imported only by a run
that names it; the face refuses a tracker whose package is not installed before anything loads
(``missing``). A tracker that fails at run time (a server that cannot be reached, a disk that is
full) is dropped with one ``TrackerWarning``: training never stops for a report. Only rank 0
reports. A resumed run is a new run in each tracker, from the step it resumes at.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol

from ftx.errors import Issue, TrackerWarning
from ftx.training.metrics import KEYS, is_line


class Tracker(Protocol):
    """One backend. ``package`` is the module that must be importable."""

    package: ClassVar[str]

    def start(self, config: dict[str, Any], run_dir: Path, step: int) -> None:
        """``step``: the step the run continues from, 0 when it starts fresh."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def finish(self, summary: dict[str, Any] | None) -> None:
        """``summary`` is None when the run failed or was interrupted."""


def run_name(config: Mapping[str, Any]) -> str:
    return str(config.get("run_name") or Path(config["out"]).name)


def project(config: Mapping[str, Any], env: str) -> str:
    """``project`` of the config, else the tracker's own variable, else ftx."""
    return str(config.get("project") or os.environ.get(env) or "ftx")


def flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of ``outer/inner`` keys (the summary's ``memory``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out |= flat(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


def numbers(data: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in flat(data).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def as_text(value: Any) -> str:
    """A config value as an MLflow parameter: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def json_block(data: Mapping[str, Any]) -> str:
    # TensorBoard renders text summaries as Markdown.
    return "```json\n" + json.dumps(data, indent=2, default=str) + "\n```"


class TensorBoard:
    """Event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``), by tensorboardX:
    a scalar per metric, the config and the summary as text, the summary's numbers as
    ``summary/*`` scalars at the last step. A resumed run adds a file there."""

    package: ClassVar[str] = "tensorboardX"

    def start(self, config: dict[str, Any], run_dir: Path, step: int) -> None:
        from tensorboardX import SummaryWriter

        # The killed run may have reported steps past its checkpoint: TensorBoard drops them.
        purge = step + 1 if step else None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        self.writer.add_text("config", json_block(config), 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        # Like metrics.jsonl, a killed run keeps its reports (tensorboardX flushes every 2 min).
        self.writer.flush()

    def finish(self, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            step = int(summary["steps"])
            for key, value in numbers(summary).items():
                self.writer.add_scalar(f"summary/{key}", value, step)
            self.writer.add_text("summary", json_block(summary), step)
        self.writer.close()


class WandB:
    """A W&B run (its files in ``RUN_DIR/wandb``); ``WANDB_MODE``, ``WANDB_API_KEY`` and the
    rest of W&B's own settings apply. The summary goes into the run's summary as ``summary/*``:
    W&B keeps there the last value of each metric, under the metric's own name."""

    package: ClassVar[str] = "wandb"

    def start(self, config: dict[str, Any], run_dir: Path, step: int) -> None:
        import wandb

        self.run = wandb.init(
            project=project(config, "WANDB_PROJECT"),
            name=run_name(config),
            dir=str(run_dir),
            config=config,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            self.run.summary.update({f"summary/{k}": v for k, v in flat(summary).items()})
        self.run.finish(exit_code=0 if summary is not None else 1)


class MLflow:
    """An MLflow run on ``MLFLOW_TRACKING_URI`` (else MLflow's default store): the config as
    parameters, the metrics by step, the summary's numbers as ``summary/*`` metrics and its
    words as ``summary/*`` tags; FAILED when the run did not finish."""

    package: ClassVar[str] = "mlflow"
    # MLflow's limit on the entries of one log_batch call.
    BATCH = 100

    def start(self, config: dict[str, Any], run_dir: Path, step: int) -> None:
        import mlflow
        from mlflow.entities import Param

        uri = mlflow.get_tracking_uri()
        if uri.startswith(("http://", "https://")):
            _answers(uri)
        self.client = mlflow.MlflowClient(uri)
        name = project(config, "MLFLOW_EXPERIMENT_NAME")
        experiment = self.client.get_experiment_by_name(name)
        eid = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(
            eid, run_name=run_name(config), tags={"ftx.run_dir": str(run_dir)}
        )
        self.run_id = run.info.run_id
        params = [Param(k, as_text(v)) for k, v in config.items()]
        for i in range(0, len(params), self.BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + self.BATCH])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, summary: dict[str, Any] | None) -> None:
        if summary is not None:
            step = int(summary["steps"])
            for key, value in numbers(summary).items():
                self.client.log_metric(self.run_id, f"summary/{key}", value, step=step)
            for key, text in flat(summary).items():
                if isinstance(text, str):
                    self.client.set_tag(self.run_id, f"summary/{key}", text)
        self.client.set_terminated(self.run_id, "FINISHED" if summary is not None else "FAILED")


def _answers(url: str) -> None:
    """Raises unless a server answers at ``url`` (any HTTP status will do): MLflow would retry
    one that does not for minutes while the run waits to start."""
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(url, timeout=10).close()


BACKENDS: dict[str, type[Tracker]] = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a module without a spec
        return False


def missing(names: Iterable[str]) -> list[Issue]:
    """A ``report_to`` issue for each named tracker whose package is not installed."""
    return [
        Issue(
            "report_to",
            name,
            f"needs the {BACKENDS[name].package} package, which is not installed: "
            f"pip install 'ftx[{name}]'",
        )
        for name in names
        if not _installed(BACKENDS[name].package)
    ]


class Reporting:
    """The trainer's callback that feeds every tracker of ``report_to``. As a context it starts
    them and, when the run ends in an exception, finishes them as failed."""

    def __init__(
        self, names: Iterable[str], config: dict[str, Any], run_dir: Path, step: int
    ) -> None:
        self.live: dict[str, Tracker] = {name: BACKENDS[name]() for name in names}
        self.config, self.run_dir, self.step = config, run_dir, step
        self.finished = False

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self.live.items()):
            try:
                call(tracker)
            # Anything a tracker's package raises: a report must never stop the training.
            except Exception as e:
                del self.live[name]
                warnings.warn(
                    f"{name}: {what} failed ({type(e).__name__}: {e}); the run goes on "
                    f"without {name}",
                    TrackerWarning,
                    stacklevel=3,
                )

    def __enter__(self) -> Reporting:
        self._each("start", lambda t: t.start(self.config, self.run_dir, self.step))
        return self

    def __call__(self, record: dict[str, Any]) -> None:
        if record.get("event") or not is_line(record):
            return
        metrics = {k: float(record[k]) for k in KEYS if k != "step" and record.get(k) is not None}
        self._each("log", lambda t: t.log(metrics, int(record["step"])))

    def finish(self, summary: dict[str, Any] | None) -> None:
        self.finished = True
        self._each("finish", lambda t: t.finish(summary))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.finish(None)
