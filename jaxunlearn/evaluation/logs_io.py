"""Evaluation results between tools: TOFU's eval logs and open-unlearning's TOFU_EVAL.json in
as per-example records (retain references for forget quality without training a retain
model), and open-unlearning's TOFU_EVAL.json / TOFU_SUMMARY.json out.

TOFU (locuslab/tofu evaluate_util.py) writes one JSON per set, each a mapping of metric
to {row index: value}: eval_log.json (retain), eval_log_forget.json (forget),
eval_real_author_wo_options.json, eval_real_world_wo_options.json; its
aggregate_eval_stat.py reads them, or one eval_log_aggregated.json keyed by those names.
open-unlearning writes {metric: {"agg_value": x, "value_by_index": {index: {...}}}}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DataError

PER_EXAMPLE = "per_example.jsonl"
SUMMARY = "summary.json"
TOFU_FILES = {
    "eval_log.json": "retain",
    "eval_log_forget.json": "forget",
    "eval_real_author_wo_options.json": "real_authors",
    "eval_real_world_wo_options.json": "world_facts",
}
TOFU_AGGREGATED = "eval_log_aggregated.json"
OU_EVAL, OU_SUMMARY = "TOFU_EVAL.json", "TOFU_SUMMARY.json"
OU_SET = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
OU_MIA = {"loss": "mia_loss", "zlib": "mia_zlib", "min_k": "mia_min_k", "min_k_plus_plus": "mia_min_k_plus_plus"}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path} as JSON ({e}); give an evaluation file or directory") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds no JSON object of metrics")
    return data


# --- TOFU's eval logs in -------------------------------------------------------------------


def tofu_log_records(log: dict, set_name: str, where: str) -> list[dict]:
    """Records of one TOFU eval log (avg_gt_loss, avg_paraphrased_loss, average_perturb_loss,
    rougeL_recall, generated_text = [input, generation, ground truth] per row)."""
    if "avg_gt_loss" not in log:
        raise DataError(f"{where} is not a TOFU eval log: it has no 'avg_gt_loss' (keys: {sorted(log)[:6]})")
    records = []
    for index in sorted(log["avg_gt_loss"], key=int):
        rec = {"set": set_name, "index": int(index), "avg_nll": float(log["avg_gt_loss"][index])}
        rec["probability"] = math.exp(-rec["avg_nll"])
        para = log.get("avg_paraphrased_loss", {}).get(index)
        pert = log.get("average_perturb_loss", {}).get(index)
        if para is not None and pert is not None:
            rec.update(
                avg_nll_base=float(para),
                avg_nll_perturbed=[float(x) for x in pert],
                truth_ratio=float(np.exp(float(para) - np.mean(pert))),
            )
        if index in log.get("rougeL_recall", {}):
            rec["rougeL_recall"] = float(log["rougeL_recall"][index])
        text = log.get("generated_text", {}).get(index)
        if isinstance(text, list) and len(text) == 3:
            rec.update(prompt=text[0], generation=text[1], answer=text[2])
        records.append(rec)
    return records


def read_tofu_logs(path: str | Path) -> list[dict]:
    """Records from a TOFU eval_results directory or an eval_log_aggregated.json."""
    path = Path(path)
    if path.is_dir():
        logs = {name: _read_json(path / name) for name in TOFU_FILES if (path / name).exists()}
        if not logs and (path / TOFU_AGGREGATED).exists():
            logs = _read_json(path / TOFU_AGGREGATED)
    else:
        logs = _read_json(path)
    logs = {k: v for k, v in logs.items() if k in TOFU_FILES}
    if not logs:
        raise DataError(f"{path} holds none of TOFU's eval logs ({', '.join(TOFU_FILES)})")
    return [r for name, log in logs.items() for r in tofu_log_records(log, TOFU_FILES[name], f"{path}/{name}")]


# --- open-unlearning's TOFU_EVAL.json in and out ------------------------------------------


def _by_index(logs: dict, key: str) -> dict:
    return (logs.get(key) or {}).get("value_by_index") or {}


def read_open_unlearning(path: str | Path) -> tuple[list[dict], dict]:
    """(records, summary with MIA AUCs) from open-unlearning's TOFU_EVAL.json."""
    path = Path(path)
    logs = _read_json(path / OU_EVAL if path.is_dir() else path)
    records = []
    for name, prefix in OU_SET.items():
        prob = _by_index(logs, f"{prefix}_Q_A_Prob")
        truth = _by_index(logs, f"{prefix}_truth_ratio") or _by_index(logs, f"{prefix}_Truth_Ratio")
        rouge = _by_index(logs, f"{prefix}_Q_A_ROUGE")
        indices = sorted(set(prob) | set(truth) | set(rouge), key=int)
        for index in indices:
            rec = {"set": name, "index": int(index)}
            if (prob.get(index) or {}).get("avg_loss") is not None:
                rec["avg_nll"] = float(prob[index]["avg_loss"])
                rec["probability"] = math.exp(-rec["avg_nll"])
            if (truth.get(index) or {}).get("score") is not None:
                rec["truth_ratio"] = float(truth[index]["score"])  # wrong / correct, as R here
            if (rouge.get(index) or {}).get("rougeL_recall") is not None:
                rec["rougeL_recall"] = float(rouge[index]["rougeL_recall"])
                rec["generation"] = rouge[index].get("generation")
            records.append(rec)
    if not records:
        raise DataError(f"{path} holds no per-example TOFU metrics of open-unlearning (e.g. forget_truth_ratio)")
    auc = {
        ours: float(logs[theirs]["agg_value"])
        for ours, theirs in OU_MIA.items()
        if (logs.get(theirs) or {}).get("agg_value") is not None
    }
    return records, ({"mia_auc": auc} if auc else {})


def open_unlearning_logs(records: list[dict], summary: dict) -> tuple[dict, dict]:
    """(TOFU_EVAL.json, TOFU_SUMMARY.json) in open-unlearning's layout and metric names."""
    logs: dict = {}
    sets = summary.get("sets", {})

    def put(key, agg, by_index=None):
        if agg is not None:
            logs[key] = {"agg_value": agg, **({"value_by_index": by_index} if by_index is not None else {})}

    for name, prefix in OU_SET.items():
        recs = [r for r in records if r["set"] == name]
        if not recs:
            continue
        stats = sets.get(name, {})
        prob_key = f"{prefix}_Q_A_Prob" + ("_normalised" if name in ("real_authors", "world_facts") else "")
        put(
            prob_key,
            stats.get("probability"),
            {str(r["index"]): {"prob": r.get("probability"), "avg_loss": r.get("avg_nll")} for r in recs},
        )
        if "rougeL_recall" in stats:
            put(
                f"{prefix}_Q_A_ROUGE",
                stats["rougeL_recall"],
                {
                    str(r["index"]): {
                        "rougeL_recall": r.get("rougeL_recall"),
                        "generation": r.get("generation"),
                        "ground_truth": r.get("answer"),
                    }
                    for r in recs
                },
            )
        if "truth_ratio" in stats:
            put(
                f"{prefix}_Truth_Ratio" if name != "forget" else "forget_truth_ratio",
                stats["truth_ratio"],
                {str(r["index"]): {"score": r.get("truth_ratio")} for r in recs},
            )
    forget = sets.get("forget", {})
    for key in ("extraction_strength", "exact_memorization"):
        put(key, forget.get(key))
    for ours, theirs in OU_MIA.items():
        put(theirs, (summary.get("mia_auc") or {}).get(ours))
    put("model_utility", summary.get("model_utility"))
    put("forget_quality", summary.get("forget_quality"))
    put("privleak", (summary.get("privleak") or {}).get("min_k"))
    headline = {
        "forget_quality",
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "forget_truth_ratio",
        "model_utility",
        "privleak",
        "extraction_strength",
        "exact_memorization",
    }
    return logs, {k: v["agg_value"] for k, v in logs.items() if k in headline}


def write_open_unlearning(out_dir: Path, records: list[dict], summary: dict) -> None:
    logs, short = open_unlearning_logs(records, summary)
    (Path(out_dir) / OU_EVAL).write_text(json.dumps(logs, indent=4) + "\n")
    (Path(out_dir) / OU_SUMMARY).write_text(json.dumps(short, indent=4) + "\n")


# --- any of them ---------------------------------------------------------------------------


def read_evaluation(path: str | Path) -> tuple[list[dict], dict | None, str]:
    """(records, summary or None, format) of an evaluation: a jaxunlearn eval directory
    (per_example.jsonl), TOFU's eval logs, or open-unlearning's TOFU_EVAL.json."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"evaluation {path} does not exist")
    if path.is_dir() and (path / PER_EXAMPLE).exists():
        lines = (path / PER_EXAMPLE).read_text().splitlines()
        try:
            records = [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f"{path / PER_EXAMPLE} is not valid JSON Lines ({e})") from None
        if not records:
            raise DataError(f"{path / PER_EXAMPLE} holds no records")
        summary = _read_json(path / SUMMARY) if (path / SUMMARY).exists() else None
        return records, summary, "jaxunlearn"
    if (path.is_dir() and (path / OU_EVAL).exists()) or path.name == OU_EVAL:
        records, summary = read_open_unlearning(path)
        return records, summary, "open-unlearning"
    if path.is_dir() and not any((path / n).exists() for n in [*TOFU_FILES, TOFU_AGGREGATED]):
        raise DataError(
            f"{path} holds no evaluation (forget quality needs a retain model's evaluation): expected {PER_EXAMPLE} "
            "(jaxunlearn eval), TOFU's eval logs "
            f"({', '.join(TOFU_FILES)}) or open-unlearning's {OU_EVAL}. Make one with: jaxunlearn eval "
            "model.path=RETAIN_MODEL output.dir=DIR"
        )
    return read_tofu_logs(path), None, "tofu"
