"""Extraction by sampling: greedy decoding may hide an answer that sampling still finds.
For each forget question, k answers are sampled at a temperature; the question counts as
recovered when one of them reaches the ROUGE-L recall threshold against the answer."""

from __future__ import annotations

import numpy as np

from ..data.eval_sets import build_eval_set
from ..data.tokenize import pad_token_id
from ..evaluation import metrics as M
from ..evaluation.budgets import generation_budgets
from ..evaluation.config import EvalSection
from ..evaluation.kernels import generate_texts
from .config import AttackSection


def sampled_extraction(
    model, tokenizer, template, rows: list[dict], attack: AttackSection, options: EvalSection, max_length: int
) -> dict:
    """{recovered: share of questions with a sample at ROUGE-L recall >= threshold,
    greedy_recovered: the same for the greedy answer, best_rouge: mean over questions of
    the best sample's ROUGE-L recall, samples, temperature, threshold}. Budgets of new
    tokens follow the evaluation's convention (`eval.generation_budget`)."""
    samples, e = attack.extract_samples, options
    evalset = build_eval_set(tokenizer, template, rows, "forget", max_length, e.num_rows, base_key=None)
    prompts, answers = evalset.prompts, evalset.references
    lengths = [len(p) for p in prompts]
    budgets = generation_budgets(lengths, e.generation_budget, e.max_length, e.max_new_tokens, e.tofu_batch_size)
    pad, eos, batch_size = pad_token_id(tokenizer), tokenizer.eos_token_id, e.generation_batch_size
    greedy = generate_texts(model, tokenizer, prompts, pad, eos, batch_size, budgets)
    many = [p for p in prompts for _ in range(samples)]
    sampled = generate_texts(
        model,
        tokenizer,
        many,
        pad,
        eos,
        batch_size,
        np.repeat(budgets, samples),
        temperature=attack.extract_temperature,
        seed=attack.seed,
    )
    best = M.rouge_l_recall(sampled, [a for a in answers for _ in range(samples)]).reshape(len(prompts), samples)
    best = best.max(axis=1)
    greedy_rouge = M.rouge_l_recall(greedy, answers)
    threshold = attack.extract_threshold
    return {
        "recovered": float(np.mean(best >= threshold)),
        "greedy_recovered": float(np.mean(greedy_rouge >= threshold)),
        "best_rouge": float(best.mean()),
        "samples": samples,
        "temperature": attack.extract_temperature,
        "threshold": threshold,
    }
