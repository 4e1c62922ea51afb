"""Training configuration: one YAML file, or the same keys as ``ftx train`` flags.

Everything is validated here, before a model or dataset is opened, and every problem names the
key, the value given and what is allowed. Layers, lowest first: the defaults below, a shipped
profile or YAML file named by ``extends:``, the YAML file itself, then command-line flags.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError

from ftx.errors import ConfigError, ConfigIssues, Issue

PROFILES_DIR = Path(__file__).parent / "profiles"

Method = Literal["lora", "dora", "full"]
OptimizerName = Literal["adamw", "adam", "sgd", "adafactor"]
ScheduleName = Literal["constant", "linear", "cosine", "cosine_restarts", "one_cycle"]
# The trackers of ftx.training.trackers, each behind the pip extra of its name.
TrackerName = Literal["tensorboard", "wandb", "mlflow"]


class TrainConfig(BaseModel):
    """Every knob of a training run. Field descriptions are also the ``ftx train --help`` text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(description="Local model folder (config.json, *.safetensors, tokenizer).")
    data: Path = Field(description="Artifact folder written by `ftx prepare`.")
    out: Path = Field(description="Run folder: adapters, metrics, resolved config.")

    method: Method = Field("lora", description="lora, dora or full fine-tuning.")
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha: scale = alpha / rank.")
    rslora: bool = Field(False, description="Rank-stabilized LoRA: scale = alpha / sqrt(rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Layer-relative names to adapt, e.g. self_attn.q_proj (default: all)."
    )
    num_layers: int | None = Field(
        None, ge=1, description="Adapt only the last N transformer blocks (default: all)."
    )
    lora_plus_ratio: float | None = Field(
        None, gt=0, description="LoRA+: learning rate of the B matrices = ratio x learning_rate."
    )
    quantize: Literal[4, 8] | None = Field(None, description="Quantize a float base on load.")
    dequantize_base: Literal["auto", "always", "never"] = Field(
        "auto", description="Train against a dequantized copy of a quantized base (auto: on CPU)."
    )
    compute_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="dtype of the frozen float weights (auto: float32 on CPU, bfloat16 on CUDA, "
        "kept on Metal).",
    )

    optimizer: OptimizerName = Field("adamw", description="adamw, adam, sgd or adafactor.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (adamw, sgd, adafactor).")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    schedule: ScheduleName = Field("cosine", description="Learning-rate schedule after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps (one_cycle: its rise).")
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="Final learning rate of a decay, as a fraction of the peak."
    )
    cycle_steps: int | None = Field(
        None, ge=1, description="cosine_restarts: steps of one cycle (default: a quarter of all)."
    )
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm.")
    epochs: int | None = Field(None, ge=1, description="Passes over the train split.")
    iters: int | None = Field(None, ge=1, description="Optimizer steps (instead of epochs).")
    batch_size: int = Field(
        4,
        ge=1,
        description="Rows of max_seq_length per micro-batch (packing fills the same token "
        "slots with more, narrower rows where records are short).",
    )
    max_seq_length: int = Field(2048, ge=2, description="Tokens per row; longer records are cut.")
    packing: bool = Field(True, description="Pack records into rows (else pad length buckets).")
    cpu_streams: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="On CPU: MLX streams computing shards of a micro-batch at once, each with "
        "a one-thread BLAS (auto: one per core when cores <= batch_size, else 1).",
    )
    grad_checkpoint: Annotated[int, Field(ge=1)] | bool | Literal["attention", "auto"] = Field(
        "auto",
        description="Recompute in the backward pass: attention's weights, computed in chunks "
        "of queries (attention: memory grows with the row, not its square), or each trained "
        "block's activations as well (true: the least memory; on LoRA 1.4-1.7x the step time, "
        "attention 1.25-1.3x; N: the first N trained blocks only); auto: the first of false, "
        "attention, then as few checkpointed blocks as fit.",
    )
    loss_chunk: Annotated[int, Field(ge=1)] | Literal["auto", "off"] = Field(
        "auto",
        description="Trained positions per chunk of the vocabulary projection and loss, so the "
        "logits of all of them never exist at once (auto: 64 MiB of logits; off: one piece).",
    )
    memory_limit: ByteSize | None = Field(
        None,
        description="Memory the run may use, e.g. 12GB (default: the GPU's recommended working "
        "set, or the RAM available).",
    )
    fit: Literal["check", "auto", "off"] = Field(
        "check",
        description="Before loading weights: refuse a run whose memory estimate exceeds the "
        "limit (check), change batch_size, grad_checkpoint, quantize or max_seq_length until "
        "it fits (auto), or start it anyway (off).",
    )
    seed: int = Field(0, ge=0, description="Seed of data order, adapter init and dropout.")

    eval_every: int | None = Field(
        None, ge=1, description="Validation loss every N steps (default: at the end only)."
    )
    val_batches: int | None = Field(
        None, ge=1, description="Micro-batches per validation (default: the whole split)."
    )
    report_every: int = Field(10, ge=1, description="Train metrics every N steps.")
    report_to: list[TrackerName] = Field(
        default_factory=list,
        description="Trackers that also get the config, every metrics line and the summary: "
        "tensorboard, wandb, mlflow (each an extra: pip install 'ftx[wandb]').",
    )
    project: str | None = Field(
        None,
        description="W&B project and MLflow experiment (default: WANDB_PROJECT or "
        "MLFLOW_EXPERIMENT_NAME, else ftx).",
    )
    run_name: str | None = Field(
        None, description="The run's name in the trackers (default: the run folder's name)."
    )
    save_every: int | None = Field(
        100, ge=1, description="Checkpoint every N steps (also at the end and on Ctrl-C)."
    )
    keep_checkpoints: int = Field(
        3, ge=1, description="Newest checkpoints kept (the best one is kept besides)."
    )
    patience: int | None = Field(
        None, ge=1, description="Early stopping: validations without improvement before stopping."
    )
    min_delta: float = Field(
        0.0, ge=0, description="Early stopping: smallest drop of val loss that is an improvement."
    )
    max_bad_steps: int = Field(
        5, ge=1, description="Stop after this many non-finite steps in a row (each is skipped)."
    )

    @property
    def lora_scale(self) -> float:
        return self.alpha / (self.rank**0.5 if self.rslora else self.rank)


FIELDS = tuple(TrainConfig.model_fields)


def _pydantic_issues(err: ValidationError) -> list[Issue]:
    issues: list[Issue] = []
    unions: dict[str, Issue] = {}
    for e in err.errors():
        loc = e["loc"]
        if len(loc) == 2 and isinstance(loc[1], str):
            # One error per member of a union (``int | "auto"``): one issue listing them all.
            key, msg = str(loc[0]), str(e["msg"]).removeprefix("Input should be ")
            if key in unions:
                unions[key] = Issue(key, e.get("input"), f"{unions[key].allowed}, or {msg}")
            else:
                unions[key] = Issue(key, e.get("input"), f"should be {msg}")
                issues.append(unions[key])
            continue
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            allowed = f"unknown key; {hint}known keys: {', '.join(FIELDS)}"
        elif e["type"] == "missing":
            allowed = "required; give it in the YAML file or as a flag"
        else:
            allowed = str(e["msg"]).removeprefix("Value error, ")
        issues.append(Issue(key, e.get("input"), allowed))
    return [unions.get(i.key, i) for i in issues]


def _cross_issues(c: TrainConfig) -> list[Issue]:
    """Combinations that each key alone cannot rule out; none is ever silently ignored."""
    out = []
    if c.epochs is not None and c.iters is not None:
        out.append(Issue("iters", c.iters, "give epochs or iters, not both"))
    if c.weight_decay > 0 and c.optimizer == "adam":
        out.append(Issue("weight_decay", c.weight_decay, "adam has none; use adamw"))
    if c.momentum > 0 and c.optimizer != "sgd":
        out.append(Issue("momentum", c.momentum, f"only sgd takes momentum, not {c.optimizer}"))
    if c.method == "full":
        lora_only = {"rank": 8, "alpha": 16.0, "rslora": False, "dropout": 0.0}
        for key, default in lora_only.items():
            if getattr(c, key) != default:
                out.append(Issue(key, getattr(c, key), "applies to lora and dora, not full"))
        for key in ("target_modules", "lora_plus_ratio", "quantize"):
            if getattr(c, key) is not None:
                out.append(Issue(key, getattr(c, key), "applies to lora and dora, not full"))
    if c.cycle_steps is not None and c.schedule != "cosine_restarts":
        out.append(Issue("cycle_steps", c.cycle_steps, "only for schedule cosine_restarts"))
    if c.patience is not None and c.eval_every is None:
        out.append(Issue("patience", c.patience, "early stopping needs eval_every"))
    if c.target_modules is not None and not c.target_modules:
        out.append(Issue("target_modules", c.target_modules, "name at least one module"))
    if len(set(c.report_to)) < len(c.report_to):
        out.append(Issue("report_to", c.report_to, "name each tracker once"))
    for key in ("project", "run_name"):
        if getattr(c, key) is not None and not c.report_to:
            out.append(Issue(key, getattr(c, key), "names the run in a tracker; give report_to"))
    return out


def validate(raw: Mapping[str, Any], source: str = "configuration") -> TrainConfig:
    """A checked ``TrainConfig`` from plain keys, or ``ConfigIssues`` naming every problem."""
    try:
        config = TrainConfig.model_validate(dict(raw))
    except ValidationError as e:
        raise ConfigIssues(source, _pydantic_issues(e)) from None
    if issues := _cross_issues(config):
        raise ConfigIssues(source, issues)
    return config


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (the later one would silently win) and aliases
    (a config needs none, and nested aliases expand exponentially: the "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed in an ftx config", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# A config is a screenful of keys; anything this large is not one.
MAX_CONFIG_BYTES = 1 << 20


def read_yaml(path: Path) -> dict[str, Any]:
    """One YAML mapping; syntax errors, a key given twice and aliases name the file and line."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a config")
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def _extends_path(name: str, base: Path | None) -> Path:
    if name in profiles():
        return PROFILES_DIR / f"{name}.yaml"
    path = Path(name) if base is None else base / name
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    raise ConfigIssues(
        "extends", [Issue("extends", name, f"a profile ({', '.join(profiles())}) or a YAML file")]
    )


# Keys a resumed run may change: they say how far to go and how to report, not what to compute.
RESUMABLE_CHANGES = frozenset(
    {
        *("iters", "epochs", "save_every", "keep_checkpoints", "max_bad_steps"),
        *("report_every", "report_to", "project", "run_name"),
        # The limit a plan is checked against (what fit: auto chose is in the other keys).
        *("memory_limit", "fit"),
    }
)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Lines ``key: old -> new`` for every key whose change a resume cannot accept."""
    keys = sorted((set(old) | set(new)) - RESUMABLE_CHANGES)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def resolved(config: TrainConfig) -> dict[str, Any]:
    """The config as plain data, with absolute paths so it re-runs from anywhere."""
    data = config.model_dump(mode="json")
    for key in ("model", "data", "out"):
        data[key] = str(Path(data[key]).resolve())
    return data


# Keys that say the same thing two ways: a layer that sets one drops the other from below it.
ALTERNATIVES = (("epochs", "iters"),)


def _over(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """``upper`` laid over ``lower``."""
    merged = {**lower, **upper}
    for pair in ALTERNATIVES:
        for key in pair:
            if key in upper:
                for other in pair:
                    if other not in upper:
                        merged.pop(other, None)
    return merged


def _resolve(data: dict[str, Any], base: Path | None, seen: tuple[Path, ...]) -> dict[str, Any]:
    """``data`` layered over the chain of files it ``extends``."""
    parent = data.pop("extends", None)
    if parent is None:
        return data
    path = _extends_path(str(parent), base).resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` forms a cycle")
    return _over(_resolve(read_yaml(path), path.parent, (*seen, path)), data)


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The config of a YAML file (if any) with flag values laid over it (``None`` = not given).

    ``extends`` in a file is relative to that file; given as a flag, relative to the working
    directory. Paths of model, data and out are relative to the working directory.
    """
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    data: dict[str, Any] = {}
    source = "command line"
    base: Path | None = None
    if path is not None:
        path = Path(path)
        data, source, base = read_yaml(path), str(path), path.resolve().parent
    if "extends" in flags:
        data["extends"], base = flags.pop("extends"), None
    return validate(_over(_resolve(data, base, ()), flags), source)


def dump(config: TrainConfig) -> str:
    """The resolved config as YAML, with absolute paths so it re-runs from anywhere."""
    return yaml.safe_dump(resolved(config), sort_keys=False)
