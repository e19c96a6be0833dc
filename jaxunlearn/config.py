"""The run configuration: the sections each subsystem owns (checkpoints.config,
data.config, objectives.config, parallel.MeshSection, training.config, evaluation.config)
composed into RunConfig, read from YAML files and `key=value` overrides. The pipelines
hand each core function its own section.

Unknown keys are errors that name the closest valid key; values are parsed as YAML
scalars (`train.lr=5e-6`, `data.buckets=[64,128]`, `output.export_hf_flax=true`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Literal

import yaml

from .attacks.config import ATTACKS, AttackSection
from .checkpoints.config import ModelSection
from .data.config import DataSection
from .errors import ConfigError
from .evaluation.config import EvalSection, check_answer_order
from .evaluation.selection import CRITERION
from .flagging.config import FlagSection
from .models.lora import LoRASection
from .objectives.config import ObjectiveSection
from .parallel import MeshSection
from .storage import is_remote, remote_path
from .suites.config import ChoiceSection, MuseSection
from .training.config import ContinualSection, OutputSection, TrainSection, parse_window


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
    attack: AttackSection = dataclasses.field(default_factory=AttackSection)
    lora: LoRASection = dataclasses.field(default_factory=LoRASection)
    flag: FlagSection = dataclasses.field(default_factory=FlagSection)
    muse: MuseSection = dataclasses.field(default_factory=MuseSection)
    choice: ChoiceSection = dataclasses.field(default_factory=ChoiceSection)

    def output_dir(self, command: str):
        """output.dir, or runs/<command> when unset (eval and unlearn never share a default); a
        URL comes back as an etils.epath.Path (storage.py), never as a local folder."""
        if is_remote(self.output.dir):
            return remote_path(self.output.dir)
        return Path(self.output.dir or f"runs/{command}")

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
    """Defaults <- YAML file or preset name (may name `base:` files to extend) <- key=value
    overrides."""
    return config_from_dict(read_yaml(resolve_preset(path)) if path is not None else {}, overrides, base)


def presets_dir() -> Path:
    """Where preset names resolve: $JAXUNLEARN_CONFIGS, else the repository's configs/."""
    return Path(os.environ.get("JAXUNLEARN_CONFIGS") or Path(__file__).resolve().parents[1] / "configs")


def preset_names() -> list[str]:
    root = presets_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_preset(name: str | Path) -> Path:
    """A YAML path as given, or a preset name (smollm2/unlearn, paper/tofu/me_gd) under configs/."""
    path = Path(name)
    if path.exists():
        return path
    for candidate in (presets_dir() / f"{name}.yaml", presets_dir() / str(name)):
        if candidate.is_file():
            return candidate
    close = difflib.get_close_matches(str(name).removesuffix(".yaml"), preset_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; presets: {', '.join(preset_names()[:12])}, ..."
    raise ConfigError(f"config {name} is neither a file nor a preset name under {presets_dir()}{hint}")


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
    except yaml.YAMLError as e:  # one line: file:line:column: what is wrong
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise ConfigError(f"{where}: not valid YAML ({what})") from None
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
    parse_window(t.profile_steps)
    if is_remote(cfg.output.dir):
        remote_path(cfg.output.dir)  # an unknown scheme or a missing back-end fails before any work
    if not cfg.output.final_checkpoint and not cfg.output.export:
        raise ConfigError(
            "output.final_checkpoint=false with output.export=false keeps nothing of the trained model; "
            "turn one of them on"
        )
    if cfg.objective.options.me_epsilon < 0:
        raise ConfigError("objective.options.me_epsilon must be >= 0 (0: exact log_softmax; 1e-12: the paper's code)")
    d = cfg.data
    given = [f"data.{k}" for k in ("forget_file", "retain_file") if getattr(d, k)]
    if given and d.source not in ("files", "corpus"):  # else the run would read d.source's rows, not the files
        raise ConfigError(
            f"{' and '.join(given)} set, but data.source={d.source} does not read files: set data.source=files "
            "(question/answer rows) or data.source=corpus (text), or leave the files out"
        )
    check_answer_order(cfg.eval.answers_from_scoring, cfg.eval.overlap_generation)
    if cfg.eval.best_by and not CRITERION.match(cfg.eval.best_by):
        raise ConfigError(f"eval.best_by={cfg.eval.best_by!r}: write max:KEY or min:KEY, e.g. max:forget_quality")
    unknown = [x for x in cfg.attack.attacks if x not in ATTACKS]
    if unknown:
        raise ConfigError(f"attack.attacks has unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    for key, value, rule, minimum in _LIMITS(cfg):
        if value is not None and value < minimum:
            raise ConfigError(f"{key}={value} makes no sense: it must be {rule}")


def _LIMITS(cfg: RunConfig):  # noqa: N802 - a table, written as one
    """(key, value, the rule in words, the least value) of every setting with a floor."""
    t, o, e, d, a = cfg.train, cfg.output, cfg.eval, cfg.data, cfg.attack
    return [
        ("train.max_steps", t.max_steps, "at least 1 (null: the paper's formula from epochs)", 1),
        ("train.warmup_steps", t.warmup_steps, "0 or more (null: one epoch)", 0),
        ("train.weight_decay", t.weight_decay, "0 or more", 0),
        ("train.vocab_block", t.vocab_block, "0 (whole logits) or a positive number of vocabulary columns", 0),
        ("train.clip_grad_norm", t.clip_grad_norm, "positive (null: no clipping)", 1e-30),
        ("output.keep_checkpoints", o.keep_checkpoints, "at least 1", 1),
        ("output.checkpoint_every", o.checkpoint_every, "at least 1 step (null: only at the end)", 1),
        ("output.checkpoint_minutes", o.checkpoint_minutes, "positive (null: no time-based saves)", 1e-9),
        ("eval.batch_size", e.batch_size, "at least 1", 1),
        ("eval.generation_batch_size", e.generation_batch_size, "at least 1 (null: even batches of up to 64)", 1),
        ("eval.num_rows", e.num_rows, "at least 1 (null: every row)", 1),
        ("eval.max_length", e.max_length, "at least 1", 1),
        ("eval.max_new_tokens", e.max_new_tokens, "at least 1", 1),
        ("eval.tofu_batch_size", e.tofu_batch_size, "at least 1", 1),
        ("eval.score_max_length", e.score_max_length, "at least 2 (null: data.max_length)", 2),
        ("eval.every_steps", e.every_steps, "at least 1 (null: no evaluation during training)", 1),
        ("data.max_length", d.max_length, "at least 2 (a prompt token and an answer token)", 2),
        ("data.pad_to", d.pad_to, "at least 2 (null: buckets)", 2),
        ("data.max_forget_rows", d.max_forget_rows, "at least 1 (null: every row)", 1),
        ("data.max_retain_rows", d.max_retain_rows, "at least 1 (null: every row)", 1),
        ("data.max_train_rows", d.max_train_rows, "at least 1 (null: every row)", 1),
        ("data.buckets", min(d.buckets) if d.buckets else 0, "a list of lengths of at least 2", 2),
        ("lora.rank", cfg.lora.rank, "0 (off) or more", 0),
        ("lora.alpha", cfg.lora.alpha, "positive", 1e-30),
        ("attack.relearn_rows", a.relearn_rows, "at least 1", 1),
        ("attack.relearn_steps", min(a.relearn_steps) if a.relearn_steps else 0, "a list of step counts >= 1", 1),
        ("attack.relearn_lr", a.relearn_lr, "positive", 1e-30),
        ("attack.relearn_batch_size", a.relearn_batch_size, "at least 1", 1),
        ("attack.quantize_bits", min(a.quantize_bits) if a.quantize_bits else 2, "a list of bit widths >= 2", 2),
        ("attack.quantize_group_size", a.quantize_group_size, "at least 1 (null: per output channel)", 1),
        ("attack.extract_samples", a.extract_samples, "at least 1", 1),
        ("attack.extract_temperature", a.extract_temperature, "positive", 1e-6),
    ]
