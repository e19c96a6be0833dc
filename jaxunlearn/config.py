"""Run configuration: dataclasses, YAML files and `key=value` overrides.

Unknown keys are errors that name the closest valid key; values are parsed as YAML
scalars (`train.lr=5e-6`, `data.buckets=[64,128]`, `output.export_hf_flax=true`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Literal

import yaml

from .errors import ConfigError
from .objectives.compose import DEFAULT_OBJECTIVE
from .objectives.options import ObjectiveOptions


def setting(default, help: str):  # noqa: A002 - the word --help and the reference page use
    """A config field: its default (lists and sections are copied per instance) and its help
    text, which `--help` and docs/reference/config.md show."""
    meta = {"help": help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class ModelSection:
    path: str = setting(
        "smollm2-135m-instruct", "the policy's start: HF dir, HF-Flax dir, .gguf, hub id or built-in asset"
    )
    dtype: str = setting(
        "float32",
        "parameter (master weight) dtype of the policy: float32, bfloat16 (training needs "
        "train.low_precision_params), float16",
    )
    compute_dtype: str | None = setting(
        None, "matmul and activation dtype (null: dtype); bfloat16 with float32 parameters is mixed precision"
    )
    reference_path: str | None = setting(None, "frozen reference model (null: the policy's start)")
    reference_dtype: str | None = setting(None, "dtype of the frozen reference (null: model.dtype); bfloat16 halves it")
    remat: Literal["none", "full", "dots"] = setting("none", "per-block rematerialization in the backward pass")
    matmul_precision: Literal["auto", "highest", "high", "default"] = setting(
        "auto", "matmul precision; auto: highest for fp32 compute (no TF32 / bf16 passes), default for bf16"
    )
    allow_pickle: bool = setting(False, "allow pickled pytorch_model.bin (loaded with torch weights_only=True)")


@dataclasses.dataclass
class DataSection:
    source: Literal["tofu", "closer_look", "real_world", "files"] = setting(
        "tofu", "where forget and retain rows come from"
    )
    data_dir: str | None = setting(
        None,
        "data root holding tofu/ and closer-look/ (null: $JAXUNLEARN_DATA or "
        "../shared/data); hub: locuslab/TOFU through datasets",
    )
    forget_split: str = setting("forget10", "TOFU forget split (forget01 | forget05 | forget10)")
    retain_split: str = setting("retain90", "TOFU retain split (retain99 | retain95 | retain90)")
    forget_file: str | None = setting(None, "source=files: the forget QA file (JSON, JSONL, CSV, Parquet)")
    retain_file: str | None = setting(None, "source=files: the retain QA file")
    question_key: str = setting("question", "question field of user QA files")
    answer_key: str = setting("answer", "answer field of user QA files")
    refusals_file: str | None = setting(None, "refusal strings, one per line (null: TOFU's idontknow.jsonl)")
    pairing: Literal["seeded", "closer_look"] = setting(
        "seeded",
        "retain row and refusal per forget row: seeded (numpy, by train.seed and index) or closer_look "
        "(the paper code's torch.manual_seed(index) draws)",
    )
    template: str = setting(
        "auto", "prompt format: auto | llama2-chat | phi | phi-tofu | llama3-instruct | chatml | plain | chat"
    )
    max_length: int = setting(500, "tokens per training row (longer rows are cut, and counted)")
    buckets: list[int] = setting([64, 128, 256, 512], "padded lengths a batch may take (one compile each)")
    pad_to: int | None = setting(None, "one fixed padded length instead of buckets (the paper: 500)")
    max_forget_rows: int | None = setting(None, "keep the first N forget rows (demos, smoke runs)")
    max_retain_rows: int | None = setting(None, "keep the first N retain rows")
    train_split: str = setting(
        "full", "finetune: TOFU split to train on (full: the target model; retain90: a retain model)"
    )
    train_file: str | None = setting(None, "finetune: a user QA file instead of a TOFU split")
    max_train_rows: int | None = setting(None, "finetune: keep the first N rows")


@dataclasses.dataclass
class ObjectiveSection:
    name: str = setting(
        DEFAULT_OBJECTIVE, "FORGET+RETAIN term names, e.g. ME+GD, IDK+AP, NPO+KL, GA (see docs/reference/objectives.md)"
    )
    forget_weight: float = setting(0.1, "gamma: weight of the forget term")
    retain_weight: float = setting(1.0, "alpha: weight of the retain term")
    options: ObjectiveOptions = setting(ObjectiveOptions, "every term's options (objective.options.<name>)")


@dataclasses.dataclass
class TrainSection:
    lr: float = setting(1e-5, "peak learning rate (linear warmup, then linear decay to 0)")
    epochs: float = setting(5.0, "epochs over the forget set; steps = int(epochs * rows) // batch_size")
    batch_size: int = setting(32, "effective (global) batch of forget rows per step")
    micro_batches: int = setting(1, "gradient accumulation inside the step (exact: equals the full batch)")
    loss_group_rows: int | None = setting(
        None,
        "null: each term's mean over the global batch; k: a mean per group of k rows averaged over the "
        "groups, as the paper's code (4 rows x 4 accumulation steps x 2 GPUs)",
    )
    weight_decay: float = setting(0.01, "AdamW weight decay (not on norms and biases)")
    adam_b1: float = setting(0.9, "AdamW beta1")
    adam_b2: float = setting(0.999, "AdamW beta2")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    clip_grad_norm: float | None = setting(None, "global gradient-norm clipping (null: none, as the paper)")
    warmup_steps: int | None = setting(None, "null: one epoch when an epoch has more than one step")
    max_steps: int | None = setting(None, "null: the paper's formula from epochs")
    seed: int = setting(1001, "data order, pairing and PRNG seed")
    precompute_reference: bool = setting(
        False, "compute the reference's sequence NLLs once (NPO, DPO) and drop the reference model from the step"
    )
    low_precision_params: bool = setting(
        False,
        "allow training bf16 / fp16 parameters (most updates round away at "
        "small learning rates; prefer model.dtype=float32 model.compute_dtype=bfloat16)",
    )


@dataclasses.dataclass
class MeshSection:
    data: int = setting(-1, "data-parallel axis size (-1: the devices left over)")
    fsdp: int = setting(1, "fully sharded data-parallel axis size (parameters and optimizer state sharded)")
    tensor: int = setting(1, "tensor-parallel axis size")


@dataclasses.dataclass
class OutputSection:
    dir: str = setting("runs/unlearn", "run directory (run.json, metrics.jsonl, checkpoints/, model/)")
    checkpoint_every: int | None = setting(None, "checkpoint every N steps (always at the end)")
    keep_checkpoints: int = setting(2, "checkpoints kept")
    export: bool = setting(True, "write the final model as an HF safetensors directory (model/)")
    export_hf_flax: bool = setting(False, "also write an HF-Flax msgpack directory (model-hf-flax/)")


@dataclasses.dataclass
class ContinualSection:
    split: str | None = setting(
        None, "forget01 | forget05 | forget10 pool of the Closer Look data: run its tasks one after another"
    )
    tasks: list[int] = setting([], "task ids in order (empty: every task)")
    fix_reference: bool = setting(False, "reference = the original model instead of the previous task's result")


@dataclasses.dataclass
class EvalSection:
    sets: list[str] = setting(
        ["forget", "retain", "real_authors", "world_facts"],
        "evaluation sets: forget, retain, real_authors, world_facts (holdout added for MIA)",
    )
    forget_split: str | None = setting(None, "forget evaluation split (null: data.forget_split + _perturbed)")
    holdout_split: str | None = setting(
        None, "MIA holdout split (null: the holdout of the forget split's size; none: skip)"
    )
    num_rows: int | None = setting(300, "first N rows of each set (TOFU: 300); null: all")
    batch_size: int = setting(16, "rows per generation batch; scoring packs batch_size x 64 prefix-tree nodes")
    max_length: int = setting(200, "generation: prompt + answer tokens (budgets tofu and per_row)")
    generation_budget: Literal["tofu", "open_unlearning", "per_row"] = setting(
        "per_row",
        "new tokens per answer: tofu (max_length - longest real prompt of each group of tofu_batch_size "
        "rows, as TOFU's code), open_unlearning (max_new_tokens), per_row (max_length - its own prompt)",
    )
    max_new_tokens: int = setting(200, "generation_budget=open_unlearning: new tokens per answer")
    tofu_batch_size: int = setting(30, "generation_budget=tofu: TOFU's evaluation batch size")
    score_max_length: int | None = setting(
        None, "scored rows cut at this many tokens (TOFU: 200); null: data.max_length"
    )
    memorization: Literal["clean", "open_unlearning"] = setting(
        "clean",
        "exact memorization / extraction strength: clean (every supervised token) or open_unlearning "
        "(EOS left out, extraction strength 1/n without a match)",
    )
    generate: bool = setting(True, "generate answers (ROUGE, entropy, cosine, entailment)")
    cosine: bool = setting(True, "cosine similarity with sentence embeddings (all-MiniLM-L6-v2)")
    nli_judge: str = setting("none", "entailment judge: none | causal-lm (offline zero-shot) | hub | an HF model name")
    nli_model: str = setting("smollm2-135m-instruct", "the causal-lm judge's checkpoint")
    retain_eval: str | None = setting(
        None,
        "a retain model's evaluation (jaxunlearn eval dir, TOFU logs or "
        "open-unlearning TOFU_EVAL.json): forget quality and PrivLeak",
    )
    reference_model: str | None = setting(None, "MIA reference-difference attack's model")
    task_id: int = setting(1, "source=closer_look: the continual task whose forget rows are evaluated")
    every_steps: int | None = setting(None, "unlearn: also evaluate every k steps (into output.dir/eval/step_k)")


@dataclasses.dataclass
class RunConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    objective: ObjectiveSection = dataclasses.field(default_factory=ObjectiveSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    output: OutputSection = dataclasses.field(default_factory=OutputSection)
    continual: ContinualSection = dataclasses.field(default_factory=ContinualSection)
    eval: EvalSection = dataclasses.field(default_factory=EvalSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls=RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if _is_dataclass_type(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def config_help(cls=None, prefix: str = "") -> list[str]:
    """'key = default: help' per config key, for --help (docs/reference/config.md has the same)."""
    cls = cls or RunConfig
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            lines += config_help(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f" ({' | '.join(map(str, typing.get_args(tp)))})" if typing.get_origin(tp) is Literal else ""
        lines.append(
            f"  {prefix}{f.name} = {'null' if default is None else default}{choices}: {f.metadata.get('help', '')}"
        )
    return lines


def _coerce(key: str, value, tp):
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None:
        if type(None) in typing.get_args(tp):
            return None
        raise ConfigError(f"{key} may not be null")
    if origin in (typing.Union, types.UnionType) and args:
        return _coerce(key, value, args[0])
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, args))}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, v, args[0]) if args else v for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return tp(value)
    if tp is str:
        return str(value)
    return value


def _apply(obj, data: dict, prefix: str = "") -> None:
    types = _field_types_of(obj)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in types:
            raise ConfigError(_unknown(full))
        tp = types[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} must be a mapping of its keys, got {value!r}")
            sub = getattr(obj, key)
            if dataclasses.is_dataclass(sub) and getattr(sub, "__dataclass_params__").frozen:
                merged = dataclasses.asdict(sub)
                scratch = _Mutable(type(sub), merged)
                _apply(scratch, value, f"{full}.")
                setattr(obj, key, type(sub)(**scratch.values))
            else:
                _apply(sub, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(full, value, tp))


class _Mutable:
    """Stand-in for a frozen dataclass while overrides are applied."""

    def __init__(self, cls, values: dict):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "values", values)

    def __setattr__(self, key, value):
        self.values[key] = value


def _field_types_of(obj):
    return _field_types(obj._cls) if isinstance(obj, _Mutable) else _field_types(type(obj))


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def parse_override(text: str) -> dict:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}} with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. train.lr=5e-6)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of {key}: {e}") from None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    node: dict = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: RunConfig | None = None
) -> RunConfig:
    """Defaults <- YAML file (may name `base:` files to extend) <- key=value overrides."""
    return config_from_dict(read_yaml(Path(path)) if path is not None else {}, overrides, base)


def config_from_dict(data: dict, overrides: list[str] | None = None, base: RunConfig | None = None) -> RunConfig:
    for text in overrides or []:
        data = _merge(data, parse_override(text))
    cfg = base or RunConfig()
    _apply(cfg, data)
    validate(cfg)
    return cfg


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections")
    bases = data.pop("base", None)
    merged: dict = {}
    for b in [bases] if isinstance(bases, str) else bases or []:
        merged = _merge(merged, read_yaml((path.parent / b).resolve(), seen + (path.resolve(),)))
    return _merge(merged, data)


def _check_choices(obj, prefix: str = "") -> None:
    """Every Literal field holds one of its choices (also for configs built in Python)."""
    for name, tp in _field_types(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{name}.")
        elif typing.get_origin(tp) is Literal:
            _coerce(f"{prefix}{name}", value, tp)


def validate(cfg: RunConfig) -> None:
    """Choices, then checks across fields."""
    _check_choices(cfg)
    t = cfg.train
    if t.batch_size < 1 or t.micro_batches < 1 or t.batch_size % t.micro_batches:
        raise ConfigError(
            f"train.batch_size={t.batch_size} must be a positive multiple of train.micro_batches={t.micro_batches}"
        )
    if t.lr <= 0 or t.epochs <= 0:
        raise ConfigError("train.lr and train.epochs must be positive")
    if t.loss_group_rows is not None and (t.loss_group_rows < 1 or t.batch_size % t.loss_group_rows):
        raise ConfigError(
            f"train.loss_group_rows={t.loss_group_rows} must divide train.batch_size={t.batch_size} "
            "(e.g. 4 for the paper's 4 rows per device and step), or be null for the global mean"
        )
    if cfg.objective.options.me_epsilon < 0:
        raise ConfigError("objective.options.me_epsilon must be >= 0 (0: exact log_softmax; 1e-12: the paper's code)")
