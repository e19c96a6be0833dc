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


@dataclasses.dataclass
class ModelSection:
    path: str = "smollm2-135m-instruct"  # HF dir, .gguf, hub id or built-in asset
    dtype: str = "float32"  # parameter dtype of the policy
    compute_dtype: str | None = None  # activations (default: dtype)
    reference_path: str | None = None  # frozen reference (default: the policy's start)
    reference_dtype: str | None = None  # e.g. bfloat16 to halve the reference's memory
    remat: Literal["none", "full", "dots"] = "none"
    # auto: highest for fp32 compute (no TF32 / bf16 passes on GPU / TPU), default for bf16
    matmul_precision: Literal["auto", "highest", "high", "default"] = "auto"
    allow_pickle: bool = False


@dataclasses.dataclass
class DataSection:
    source: Literal["tofu", "closer_look", "real_world", "files"] = "tofu"
    data_dir: str | None = None  # default: $JAXUNLEARN_DATA or ../shared/data; "hub" for locuslab/TOFU
    forget_split: str = "forget10"
    retain_split: str = "retain90"
    forget_file: str | None = None  # source=files
    retain_file: str | None = None
    question_key: str = "question"
    answer_key: str = "answer"
    refusals_file: str | None = None  # default: TOFU's idontknow.jsonl
    pairing: Literal["seeded", "closer_look"] = "seeded"  # retain row / refusal per forget row (closer_look: the paper code's draws)
    template: str = "auto"  # auto | llama2-chat | phi | llama3-instruct | chatml | plain | chat
    max_length: int = 500
    buckets: list[int] = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    pad_to: int | None = None  # fixed padded length (the paper: 500)
    max_forget_rows: int | None = None  # keep the first N forget rows (demos, smoke runs)
    max_retain_rows: int | None = None
    train_split: str = "full"  # finetune: TOFU split to train on (full: target; retain90: retain model)
    train_file: str | None = None  # finetune: a user QA file instead
    max_train_rows: int | None = None


@dataclasses.dataclass
class ObjectiveSection:
    name: str = DEFAULT_OBJECTIVE
    forget_weight: float = 0.1
    retain_weight: float = 1.0
    options: ObjectiveOptions = dataclasses.field(default_factory=ObjectiveOptions)


@dataclasses.dataclass
class TrainSection:
    lr: float = 1e-5
    epochs: float = 5.0
    batch_size: int = 32  # effective (global) batch
    micro_batches: int = 1  # gradient accumulation inside the step
    # None: each term's mean over the global batch (exact); k: a mean per group of k rows,
    # averaged over the groups, as the paper's code (4 rows x 4 accumulation steps x 2 GPUs)
    loss_group_rows: int | None = None
    weight_decay: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad_norm: float | None = None
    warmup_steps: int | None = None  # default: one epoch when an epoch has more than one step
    max_steps: int | None = None  # default: the paper's formula
    seed: int = 1001
    precompute_reference: bool = False  # NPO/DPO: reference sequence log-probs computed once
    # Training bf16 / fp16 parameters: at lr 1e-5 most updates round away. Opt in knowingly;
    # mixed precision (model.dtype=float32, model.compute_dtype=bfloat16) is the default way.
    low_precision_params: bool = False


@dataclasses.dataclass
class MeshSection:
    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass
class OutputSection:
    dir: str = "runs/unlearn"
    checkpoint_every: int | None = None  # steps; always at the end
    keep_checkpoints: int = 2
    export: bool = True
    export_hf_flax: bool = False


@dataclasses.dataclass
class ContinualSection:
    split: str | None = None  # forget01 | forget05 | forget10 of the Closer Look pool
    tasks: list[int] = dataclasses.field(default_factory=list)  # default: every task in order
    fix_reference: bool = False  # reference = original model instead of the previous task's result


@dataclasses.dataclass
class EvalSection:
    sets: list[str] = dataclasses.field(default_factory=lambda: ["forget", "retain", "real_authors", "world_facts"])
    forget_split: str | None = None  # default: data.forget_split + "_perturbed"
    holdout_split: str | None = None  # MIA: default the holdout split of the forget split's size; "none" skips
    num_rows: int | None = 300  # TOFU scores the first 300 rows of each set
    batch_size: int = 16  # rows per batch; scoring packs batch_size * 64 prefix-tree nodes per batch
    max_length: int = 200  # generation: prompt + answer tokens (budgets tofu and per_row)
    # new tokens per answer: tofu (max_length - longest real prompt of each group of
    # tofu_batch_size rows, as TOFU's code) | open_unlearning (max_new_tokens) | per_row
    # (max_length - the row's own prompt); prompt padding never counts
    generation_budget: Literal["tofu", "open_unlearning", "per_row"] = "per_row"
    max_new_tokens: int = 200
    tofu_batch_size: int = 30
    score_max_length: int | None = None  # scored rows cut at this many tokens (TOFU: 200); None: data.max_length
    memorization: Literal["clean", "open_unlearning"] = "clean"  # open_unlearning: EOS left out, ES 1/n without a match
    generate: bool = True
    cosine: bool = True  # sentence embeddings (all-MiniLM-L6-v2)
    nli_judge: str = "none"  # none | causal-lm | hub | an HF model name
    nli_model: str = "smollm2-135m-instruct"  # the causal-lm judge's checkpoint
    retain_eval: str | None = None  # eval dir of a retain model (per_example.jsonl) for forget quality
    reference_model: str | None = None  # MIA reference-difference attack
    task_id: int = 1  # source=closer_look: the continual task whose forget rows are evaluated
    every_steps: int | None = None  # unlearn: also evaluate every k steps (into output.dir/eval/step_k)


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: RunConfig | None = None) -> RunConfig:
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
