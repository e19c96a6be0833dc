"""`flag(cfg)`: answer prompts with the model, let judges flag what to unlearn (Chen et al.'s
evaluator), and write the flagged dialogues as a forget set and the rest as a retain set."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from ..config import RunConfig
from ..data.eval_sets import build_eval_set
from ..data.sources import load_qa_file, load_tofu
from ..data.templates import template_for
from ..data.tokenize import pad_token_id
from ..errors import ConfigError, DataError
from ..evaluation.budgets import generation_budgets
from ..evaluation.kernels import generate_texts
from ..flagging.judges import build_judges, check_judges, judge_rows, scores_by_judge
from ..parallel import initialize_distributed_from_env
from ..paths import check_writable_dir
from .evaluate import make_judge
from .loading import load_for_run, warn_if_config_misfits
from ..storage import stages_url_output


def _prompts(cfg: RunConfig) -> list[dict]:
    f, d = cfg.flag, cfg.data
    if f.prompts_file:
        path = Path(f.prompts_file)
        if not path.exists():
            raise DataError(f"flag.prompts_file {path} does not exist")
        from ..data.rows import read_rows

        raw = read_rows(path)
        if raw and d.answer_key in raw[0]:
            raw = load_qa_file(path, d.question_key, d.answer_key)
        rows = [{"prompt": str(r[d.question_key]), "reference": r.get("answer")} for r in raw if d.question_key in r]
        if raw and not rows:
            raise DataError(f"flag.prompts_file {path}: no row has the field {d.question_key!r} (data.question_key)")
    elif f.split:
        rows = [{"prompt": r["question"], "reference": r["answer"]} for r in load_tofu(f.split, d.data_dir)]
    else:
        raise DataError("jaxunlearn flag needs prompts: flag.prompts_file=FILE or flag.split=retain90")
    rows = rows[: f.max_rows] if f.max_rows else rows
    if not rows:
        raise DataError(f"no prompts to judge in {f.prompts_file or f.split}")
    return rows


@stages_url_output("flag")
def flag(cfg: RunConfig, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Write forget.jsonl (flagged: question = prompt, answer = the model's output, with the
    category, judge, score and reason), retain.jsonl (the rest), summary.json, report.md
    and scores.png to output.dir."""
    initialize_distributed_from_env()
    t0 = time.perf_counter()
    out = check_writable_dir(Path(out_dir) if out_dir else cfg.output_dir("flag"), "output.dir")
    rows = _prompts(cfg)
    check_judges(cfg.flag)
    model, tokenizer = load_for_run(cfg)
    warn_if_config_misfits(cfg, tokenizer)
    judge_model, judge_tokenizer, judge_name = model, tokenizer, str(cfg.model.path)
    if "causal_lm" in cfg.flag.judges and cfg.flag.causal_lm_model:
        judge_model, judge_tokenizer = load_for_run(cfg, cfg.flag.causal_lm_model)
        judge_name = cfg.flag.causal_lm_model
    nli = None
    if cfg.flag.reference_nli and "reference" in cfg.flag.judges:
        if cfg.eval.nli_judge == "none":
            raise ConfigError("flag.reference_nli needs an NLI judge: eval.nli_judge=hub (or causal-lm, the fallback)")
        nli = make_judge(cfg)
    judges = build_judges(cfg.flag, judge_model, judge_tokenizer, judge_name, nli)  # before generating: fail fast
    template = template_for(cfg.data.template, tokenizer)
    qa = [{"question": r["prompt"], "answer": r["reference"] or "-"} for r in rows]
    evalset = build_eval_set(tokenizer, template, qa, "flag", cfg.data.max_length, None, base_key=None)
    e = cfg.eval
    lengths = [len(p) for p in evalset.prompts]
    budgets = generation_budgets(lengths, e.generation_budget, e.max_length, e.max_new_tokens, e.tofu_batch_size)
    outputs = generate_texts(
        model,
        tokenizer,
        evalset.prompts,
        pad_token_id(tokenizer),
        tokenizer.eos_token_id,
        e.generation_batch_size,
        budgets,
    )
    judged = judge_rows([{**r, "output": o} for r, o in zip(rows, outputs)], judges)
    dialogues = [{"question": r["prompt"], "answer": r["output"], **r} for r in judged]
    forget = [d for d in dialogues if d["flagged"]]
    retain = [d for d in dialogues if not d["flagged"]]
    out.mkdir(parents=True, exist_ok=True)  # checked writable at the start, made now the results exist
    for name, part in (("forget.jsonl", forget), ("retain.jsonl", retain)):
        (out / name).write_text("".join(json.dumps(d) + "\n" for d in part))
    summary = {
        "model": str(cfg.model.path),
        "rows": len(dialogues),
        "flagged": len(forget),
        "share_flagged": len(forget) / len(dialogues),
        "by_category": dict(Counter(d["category"] for d in forget)),
        "by_judge": {j.name: sum(d["verdicts"][j.name]["flagged"] for d in dialogues) for j in judges},
        "judges": [j.name for j in judges],
        "seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_report(summary, forget))
    _histogram(scores_by_judge(judged), out / "scores.png")
    return summary


def _report(summary: dict, forget: list[dict]) -> str:
    lines = [
        f"# Flagged outputs of {summary['model']}",
        "",
        f"{summary['flagged']} of {summary['rows']} outputs flagged ({summary['share_flagged']:.0%}).",
        "",
        "| judge | flagged |",
        "|---|---|",
        *[f"| {j} | {n} |" for j, n in summary["by_judge"].items()],
        "",
        "| prompt | output | category | why |",
        "|---|---|---|---|",
    ]
    for d in forget[:50]:
        cells = [d["prompt"], d["output"], d["category"], d["reason"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ")[:120] for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _histogram(scores: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, max(len(scores), 1), figsize=(3.5 * max(len(scores), 1), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], scores.items()):
        ax.hist(values[np.isfinite(values)], bins=20)
        ax.set_title(name[:40], fontsize=8)
        ax.set_xlabel("score", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
