"""`jaxunlearn demo`: a scaled-down TOFU end to end with a real model (configs/demo.yaml).

Finetuned models are cached by a hash of what made them, so a second run reuses the
target and retain models and only repeats what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ..config import config_from_dict, read_yaml, resolve_preset
from ..data import load_tofu
from ..errors import ConfigError
from ..paths import check_writable_dir

log = logging.getLogger(__name__)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows))


def run_demo(
    config_path: str | Path, out: str | Path, overrides: list[str] | None = None, progress: bool = True
) -> dict:
    from .evaluate import evaluate
    from ..evaluation.report import compare_runs
    from .unlearn import finetune, unlearn

    t0 = time.perf_counter()
    data = read_yaml(resolve_preset(config_path))
    demo = data.pop("demo", None)
    if not demo:
        raise ConfigError(f"{config_path} has no 'demo:' section (see configs/demo.yaml)")
    out = check_writable_dir(out, "--out")
    base = lambda *extra: config_from_dict(dict(data), [*(overrides or []), *extra])  # noqa: E731
    forget = load_tofu(demo["forget_split"], base().data.data_dir)[: demo["forget_rows"]]
    retain = load_tofu(demo["retain_split"], base().data.data_dir)[: demo["retain_rows"]]
    files = out / "data"
    _write_rows(files / "forget.jsonl", forget)
    _write_rows(files / "retain.jsonl", retain)
    _write_rows(files / "target_train.jsonl", forget + retain)
    # evaluation sets: the forget/retain rows with their TOFU perturbations
    pert_forget = load_tofu(f"{demo['forget_split']}_perturbed", base().data.data_dir)[: demo["forget_rows"]]
    pert_retain = load_tofu("retain_perturbed", base().data.data_dir)[: demo["retain_rows"]]
    eval_dir = files / "eval" / "tofu"
    eval_dir.mkdir(parents=True, exist_ok=True)
    # a TOFU-shaped directory holding just the demo's rows, so the standard evaluation reads it
    forget_eval = f"{demo['forget_split']}_perturbed"
    for name, rows in ((forget_eval, pert_forget), ("retain_perturbed", pert_retain)):
        (eval_dir / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_keys = [f"data.data_dir={files / 'eval'}", f"eval.forget_split={forget_eval}"]

    cache = out / "cache"
    results: dict = {"stages": {}}

    def cached_finetune(name: str, train_file: Path) -> Path:
        cfg = base(*demo["finetune"], f"data.train_file={train_file}")
        key = _digest(cfg.to_dict(), train_file.read_text())
        run_dir = cache / f"{name}-{key}"
        if (run_dir / "summary.json").exists():
            log.warning("demo: reusing the cached %s model %s", name, run_dir)
            results["stages"][name] = "cached"
            return run_dir / "model"
        cfg = base(*demo["finetune"], f"data.train_file={train_file}", f"output.dir={run_dir}")
        t = time.perf_counter()
        finetune(cfg, overwrite=True, progress=progress)
        results["stages"][name] = f"{time.perf_counter() - t:.0f} s"
        return run_dir / "model"

    def cached_eval(name: str, model_dir: Path, *extra) -> Path:
        cfg = base(f"model.path={model_dir}", *eval_keys, *extra)
        key = _digest(cfg.to_dict(), str((model_dir / "model.safetensors").stat().st_mtime))
        eval_out = out / "eval" / name
        stamp = eval_out / "key.txt"
        if stamp.exists() and stamp.read_text() == key:
            results["stages"][f"eval {name}"] = "cached"
            return eval_out
        t = time.perf_counter()
        evaluate(cfg, out_dir=eval_out, progress=progress)
        stamp.write_text(key)
        results["stages"][f"eval {name}"] = f"{time.perf_counter() - t:.0f} s"
        return eval_out

    target = cached_finetune("target", files / "target_train.jsonl")
    retain_model = cached_finetune("retain", files / "retain.jsonl")
    retain_eval = cached_eval("retain_model", retain_model)
    evals = [retain_eval, cached_eval("target", target, f"eval.retain_eval={retain_eval}")]
    for method, method_overrides in demo["methods"].items():
        run_dir = out / "unlearn" / method.replace("+", "_")
        cfg = base(
            f"model.path={target}",
            "data.source=files",
            f"data.forget_file={files / 'forget.jsonl'}",
            f"data.retain_file={files / 'retain.jsonl'}",
            *demo["unlearn_common"],
            *method_overrides,
            f"output.dir={run_dir}",
        )
        t = time.perf_counter()
        unlearn(cfg, overwrite=True, progress=progress)
        results["stages"][f"unlearn {method}"] = f"{time.perf_counter() - t:.0f} s"
        evals.append(cached_eval(method.replace("+", "_"), run_dir / "model", f"eval.retain_eval={retain_eval}"))
    table = compare_runs([str(e) for e in evals], out / "report")
    results["table"] = table
    results["seconds"] = time.perf_counter() - t0
    (out / "report" / "README.md").write_text(
        "# jaxunlearn demo\n\nScaled-down TOFU with SmolLM2-135M-Instruct: one forget author "
        f"({len(forget)} QA), {len(retain)} retain QA.\n\n{table}\n\nStages: {json.dumps(results['stages'])}\n"
        f"\nTotal: {results['seconds']:.0f} s. Unlearned models (HF format) in {out / 'unlearn'}/*/model.\n"
    )
    return results
