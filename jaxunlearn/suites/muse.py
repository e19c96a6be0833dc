"""MUSE's metrics as open-unlearning's MUSE evaluator computes them.

- VerbMem (forget_verbmem_ROUGE): the model continues each verbmem prompt (greedy, 128
  new tokens); ROUGE-L F1 (rouge_score, stemmer) against the true continuation, the
  continuation being the tokens after the prompt's in prompt + " " + gt, cut at 2048.
- KnowMem (forget_ / retain_knowmem_ROUGE): each question after the split's in-context
  examples ("Question: q\\nAnswer: a\\n\\n" ..., then "Question: q\\nAnswer: "), greedy,
  32 new tokens, cut at "\\n\\n", "\\nQuestion", "Question:"; ROUGE-L F1 against the answer.
- PrivLeak: a membership attack (Min-K%, k = 0.4) scores the privleak forget and holdout
  texts; AUC with holdout as the positive class; PrivLeak = ((1 - AUC) - (1 - AUC_retrain))
  / (1 - AUC_retrain) * 100, near 0 when the model looks like one never trained on the
  forget set, very negative when it still knows it (under-unlearning), positive when it
  over-unlearns.
- Extraction strength / exact memorization on the verbmem rows (prompt + continuation).

Token log-probs of MIA and memorization leave out the last scored token by default, as
open-unlearning's tokenwise_logprobs does (`muse.token_convention`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..data.corpus import encode_prefixed_text
from ..data.muse import load_muse
from ..data.tokenize import TokenizedRows, pad_token_id
from ..errors import DataError
from ..evaluation import metrics as M
from ..evaluation.kernels import batch_mesh, generate_texts, score_rows
from ..evaluation.overlap import StopBetweenBatches, generation_beside, overlaps_generation
from .config import MUSE_METRICS, MuseSection

log = logging.getLogger(__name__)

_ROUGE = None


def rouge_scores(generations: list[str], references: list[str]) -> list[dict]:
    """open-unlearning's eval_rouge_recall_batch: rouge1 recall, rougeL F1 and recall."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    out = []
    for gen, ref in zip(generations, references):
        s = _ROUGE.score(ref, gen)
        out.append(
            {
                "rouge1_recall": s["rouge1"].recall,
                "rougeL_f1": s["rougeL"].fmeasure,
                "rougeL_recall": s["rougeL"].recall,
            }
        )
    return out


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def _ground_truth(tokenizer, prompt_ids, target_ids) -> str:
    """The reference's ground truth: the decoded supervised tokens with the decoded prompt
    removed, stripped."""
    return _decode(tokenizer, target_ids).replace(_decode(tokenizer, prompt_ids), "").strip()


def verbmem_inputs(tokenizer, rows: list[dict], max_length: int) -> tuple[list[np.ndarray], list[str]]:
    prompts, truths = [], []
    for row in rows:
        ids, _, n_prefix = encode_prefixed_text(tokenizer, row["prompt"], row["gt"], max_length, insert_space=True)
        prompt = np.asarray(tokenizer(row["prompt"], add_special_tokens=True)["input_ids"], np.int32)
        prompts.append(prompt)
        truths.append(_ground_truth(tokenizer, prompt, ids[n_prefix:]))
    return prompts, truths


def knowmem_inputs(
    tokenizer, rows: list[dict], examples: list[dict], m: MuseSection
) -> tuple[list[np.ndarray], list[str]]:
    """Prompts with the in-context examples (preprocess_chat_instance, predict_with_generate)."""
    prompts, truths = [], []
    eos = tokenizer.eos_token_id
    for row in rows:
        questions = [e["question"] for e in examples] + [row["question"]]
        answers = [e["answer"] for e in examples] + [row["answer"]]
        if m.prompt == "chat":
            chat = []
            for q, a in zip(questions, answers):
                chat += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            full, prompt = _chat_ids(tokenizer, chat, False), _chat_ids(tokenizer, chat[:-1], True)
        else:
            text = "".join(
                m.user_start + q + m.user_end + m.assistant_start + a + m.assistant_end
                for q, a in zip(questions[:-1], answers[:-1])
            )
            text += m.user_start + questions[-1] + m.user_end + m.assistant_start
            full = tokenizer(
                text + answers[-1], add_special_tokens=True, max_length=m.knowmem_max_length, truncation=True
            )["input_ids"]
            prompt = tokenizer(text, add_special_tokens=True, max_length=m.knowmem_max_length, truncation=True)[
                "input_ids"
            ]
        if full[-1] != eos:
            full = full + [eos]
        prompts.append(np.asarray(prompt, np.int32))
        truths.append(_ground_truth(tokenizer, prompt, full))
    return prompts, truths


def _chat_ids(tokenizer, chat: list[dict], generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # a BatchEncoding in newer transformers


def mia_score(attack: str, token_logp, mu, sigma, text: str, k: float) -> float:
    if attack == "min_k":
        return M.mia_min_k(token_logp, k) if len(token_logp) else 0.0
    if attack == "min_k_plus_plus":
        return M.mia_min_k_plus_plus(token_logp, mu, sigma, k) if len(token_logp) else 0.0
    if attack == "loss":
        return M.mia_loss(token_logp)
    if attack == "zlib":
        return M.mia_zlib(token_logp, text)
    raise DataError(f"unknown MIA attack {attack!r}")


def _trim(values, convention: str):
    """open_unlearning: its tokenwise log-probs leave out the last labelled token."""
    return values[:-1] if convention == "open_unlearning" else values


def _score_texts(model, tokenizer, rows: TokenizedRows, batch_size: int, full_stats: bool):
    longest = int(rows.lengths().max())  # 2048 tokens and a BOS: one more shape, not 4096
    buckets = (64, 128, 256, 512, 1024, 2048) + ((longest,) if longest > 2048 else ())
    return score_rows(model, rows, pad_token_id(tokenizer), batch_size, buckets, full_stats=full_stats)


def read_reference_auc(path: str, attack: str) -> float:
    """The retrained model's AUC: a jaxunlearn MUSE summary (file or its directory) or an
    open-unlearning MUSE_EVAL.json (mia_<attack>.agg_value)."""
    p = Path(path)
    if p.is_dir():
        p = next((p / n for n in ("summary.json", "MUSE_EVAL.json") if (p / n).exists()), p / "summary.json")
    if not p.exists():
        raise DataError(f"muse.retain_eval {path}: no summary.json or MUSE_EVAL.json there")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"muse.retain_eval {p}: malformed JSON ({e.msg}, line {e.lineno})") from None
    key = f"mia_{attack}"
    value = data.get(key)
    if isinstance(value, dict):
        value = value.get("auc", value.get("agg_value"))
    if value is None:
        raise DataError(
            f"muse.retain_eval {p} has no {key} AUC; evaluate the retrained model with "
            f"muse.privleak_attack={attack} and the privleak metric"
        )
    return float(value)


def muse_data(corpus: str, data_dir, m: MuseSection) -> dict[str, list[dict]]:
    """Every split the configured metrics read, checked (file, row, field) before scoring."""
    unknown = [x for x in m.metrics if x not in MUSE_METRICS]
    if unknown:
        raise DataError(f"unknown muse.metrics {unknown}; known: {', '.join(MUSE_METRICS)}")
    want, data = set(m.metrics), {"corpus": corpus}
    take = (lambda rows: rows[: m.num_rows]) if m.num_rows else (lambda rows: rows)
    if want & {"forget_verbmem_ROUGE", "extraction_strength", "exact_memorization"}:
        data["verbmem"] = take(load_muse(corpus, "verbmem", "forget", data_dir))
    for name, split in (("forget_knowmem", m.forget_qa_split), ("retain_knowmem", m.retain_qa_split)):
        if f"{name}_ROUGE" in want:
            data[name] = take(load_muse(corpus, "knowmem", split, data_dir))
            data[f"{name}_icl"] = load_muse(corpus, "knowmem", f"{split}_icl", data_dir)
    if "privleak" in want:
        for part in ("forget", "holdout"):
            data[f"privleak_{part}"] = take(load_muse(corpus, "privleak", part, data_dir))
        if m.retain_eval:
            data["reference_auc"] = read_reference_auc(m.retain_eval, m.privleak_attack)
    return data


def evaluate_muse(
    model,
    tokenizer,
    data: dict,
    m: MuseSection,
    batch_size: int = 16,
    generation_batch_size: int | None = None,
    overlap_generation: bool | None = None,
):
    """(records, summary) of the configured MUSE metrics on one model (`data`: muse_data);
    texts are scored `batch_size` rows at a time and answers decoded in batches of
    `generation_batch_size` rows (None: `kernels.decoding_batch_size`'s even batches), on a
    second thread while the texts are scored if `overlap_generation` says so
    (`overlap.overlaps_generation`; None: on for a single-process CPU run on one device)."""
    summary: dict = {"benchmark": "muse", "corpus": data["corpus"]}
    want = set(m.metrics)
    asked = _generation_inputs(tokenizer, data, m, want)

    def generate_all(stop):
        return [_generate(model, tokenizer, *inputs[2:], generation_batch_size, stop) for inputs in asked]

    overlap = overlaps_generation(overlap_generation, batch_mesh(model))
    with generation_beside(overlap, generate_all) as answers:
        scored, values = _scored_metrics(model, tokenizer, data, m, batch_size, want)
        generations = answers()
    records: list[dict] = []
    for (name, truths, *_), gens in zip(asked, generations):
        summary[f"{name}_ROUGE"] = _rouge_records(records, name, gens, truths)
    summary.update(values)  # after the ROUGE values, in the order of the metrics' list
    return records + scored, summary


def _generation_inputs(tokenizer, data: dict, m: MuseSection, want: set) -> list[tuple]:
    """(set name, truths, prompts, new tokens, stop strings) of each ROUGE metric asked for."""
    asked = []
    if "forget_verbmem_ROUGE" in want:
        prompts, truths = verbmem_inputs(tokenizer, data["verbmem"], m.verbmem_max_length)
        asked.append(("forget_verbmem", truths, prompts, m.verbmem_max_new_tokens, ()))
    for name in ("forget_knowmem", "retain_knowmem"):
        if f"{name}_ROUGE" in want:
            prompts, truths = knowmem_inputs(tokenizer, data[name], data[f"{name}_icl"], m)
            asked.append((name, truths, prompts, m.knowmem_max_new_tokens, tuple(m.knowmem_stop)))
    return asked


def _scored_metrics(model, tokenizer, data: dict, m: MuseSection, batch_size: int, want: set):
    """(records, values) of the metrics that score texts: memorization, PrivLeak."""
    records: list[dict] = []
    summary: dict = {}
    if want & {"extraction_strength", "exact_memorization"}:
        rows = TokenizedRows([], [])
        for row in data["verbmem"]:
            ids, labels, _ = encode_prefixed_text(tokenizer, row["prompt"], row["gt"], m.verbmem_max_length, True)
            rows.ids.append(ids)
            rows.labels.append(labels)
        scores = _score_texts(model, tokenizer, rows, batch_size, full_stats=True)
        exact, strength = M.MEMORIZATION[m.token_convention]
        es = [strength(c) for c in scores.correct]
        em = [exact(c) for c in scores.correct]
        if "extraction_strength" in want:
            summary["extraction_strength"] = float(np.mean(es))
        if "exact_memorization" in want:
            summary["exact_memorization"] = float(np.mean([x for x in em if x is not None]))
        records += [
            {"set": "verbmem_memorization", "index": i, "extraction_strength": a, "exact_memorization": b}
            for i, (a, b) in enumerate(zip(es, em))
        ]
    if "privleak" in want:
        summary.update(_privleak(model, tokenizer, data, m, batch_size, records))
    return records, summary


def _generate(model, tokenizer, prompts, new_tokens: int, stops: tuple[str, ...], batch_size, stop) -> list[str]:
    """Greedy answers; ends between batches once `stop` is set (`overlap.StopBetweenBatches`)."""
    longest = max(len(p) for p in prompts)
    buckets = (64, 128, 256, 512, 1024, 2048) if longest <= 2048 else (longest,)
    return generate_texts(
        model,
        tokenizer,
        prompts,
        pad_token_id(tokenizer),
        tokenizer.eos_token_id,
        batch_size,
        budgets=np.full(len(prompts), new_tokens),
        buckets=buckets,
        stop_strings=stops,
        progress=StopBetweenBatches(None, stop),
    )


def _rouge_records(records: list, name: str, gens: list[str], truths: list[str]) -> float:
    scores = rouge_scores(gens, truths)
    records += [
        {"set": name, "index": i, "generation": g, "ground_truth": t, **s}
        for i, (g, t, s) in enumerate(zip(gens, truths, scores))
    ]
    return float(np.mean([s["rougeL_f1"] for s in scores]))


def _privleak(model, tokenizer, data: dict, m: MuseSection, batch_size: int, records: list) -> dict:
    scores = {}
    for part in ("forget", "holdout"):
        texts = [str(r["text"]) for r in data[f"privleak_{part}"]]
        rows = TokenizedRows([], [])
        for text in texts:
            ids, labels, _ = encode_prefixed_text(tokenizer, "", text, m.privleak_max_length)
            rows.ids.append(ids)
            rows.labels.append(labels)
        stats = _score_texts(model, tokenizer, rows, batch_size, full_stats=m.privleak_attack == "min_k_plus_plus")
        t = m.token_convention
        scores[part] = np.array(
            [
                mia_score(m.privleak_attack, _trim(lp, t), _trim(mu, t), _trim(sd, t), text, m.privleak_k)
                for lp, mu, sd, text in zip(stats.token_logp, stats.mu, stats.sigma, texts)
            ]
        )
        records += [{"set": f"privleak_{part}", "index": i, "mia_score": float(s)} for i, s in enumerate(scores[part])]
    auc = M.auc(scores["forget"], scores["holdout"])
    if "reference_auc" in data:
        reference, source = data["reference_auc"], m.retain_eval
    else:
        reference, source = 0.5, "default 0.5 (no muse.retain_eval)"
        log.warning("PrivLeak without a retrained model's evaluation (muse.retain_eval): reference AUC 0.5")
    privleak = ((1 - auc) - (1 - reference)) / ((1 - reference) + 1e-10) * 100
    return {
        f"mia_{m.privleak_attack}": {
            "auc": auc,
            "forget_mean": float(scores["forget"].mean()),
            "holdout_mean": float(scores["holdout"].mean()),
        },
        "privleak": float(privleak),
        "privleak_reference_auc": reference,
        "privleak_reference": source,
    }
