"""The muse and choice sections of the run config (eval.benchmark picks the evaluation)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..settings import setting

MUSE_METRICS = (
    "forget_verbmem_ROUGE",
    "forget_knowmem_ROUGE",
    "retain_knowmem_ROUGE",
    "privleak",
    "extraction_strength",
    "exact_memorization",
)


@dataclasses.dataclass
class MuseSection:
    metrics: list[str] = setting(
        ["forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak", "extraction_strength"],
        "MUSE metrics (open-unlearning's eval/muse set): " + ", ".join(MUSE_METRICS),
    )
    forget_qa_split: str = setting("forget_qa", "knowmem split of forget questions (its _icl split: the examples)")
    retain_qa_split: str = setting(
        "retain_qa", "knowmem split of retain questions (Books' older revisions: retain2_qa)"
    )
    verbmem_max_new_tokens: int = setting(128, "VerbMem: new tokens continuing each forget prompt")
    verbmem_max_length: int = setting(2048, "VerbMem: tokens of the true continuation kept")
    knowmem_max_new_tokens: int = setting(32, "KnowMem: new tokens per answer")
    knowmem_max_length: int = setting(512, "KnowMem: prompt tokens (in-context examples + question)")
    knowmem_stop: list[str] = setting(["\n\n", "\nQuestion", "Question:"], "KnowMem: answers are cut at these")
    prompt: Literal["plain", "chat"] = setting(
        "plain", "KnowMem prompt: plain (tags below, MUSE's Llama-2 base models) or chat (the tokenizer's template)"
    )
    user_start: str = setting("Question: ", "plain prompt: before each question")
    user_end: str = setting("\n", "plain prompt: after each question")
    assistant_start: str = setting("Answer: ", "plain prompt: before each answer")
    assistant_end: str = setting("\n\n", "plain prompt: after each in-context answer")
    privleak_attack: Literal["min_k", "min_k_plus_plus", "loss", "zlib"] = setting(
        "min_k", "PrivLeak's membership attack (open-unlearning and MUSE: min_k)"
    )
    privleak_k: float = setting(0.4, "Min-K% / Min-K%++: the fraction of lowest-scoring tokens")
    privleak_max_length: int = setting(2048, "PrivLeak: tokens of each forget / holdout text scored")
    retain_eval: str | None = setting(
        None,
        "the retrained model's MUSE evaluation (jaxunlearn summary.json dir or open-unlearning MUSE_EVAL.json): "
        "PrivLeak's reference AUC (null: 0.5, as the reference code)",
    )
    token_convention: Literal["open_unlearning", "clean"] = setting(
        "open_unlearning",
        "MIA and extraction strength: open_unlearning (the last scored token left out, as its code) or clean",
    )
    num_rows: int | None = setting(None, "first N rows of each MUSE split (null: all)")


@dataclasses.dataclass
class ChoiceSection:
    tasks: list[str] = setting(
        ["wmdp_bio", "wmdp_cyber", "mmlu"],
        "multiple-choice tasks: wmdp_bio | wmdp_cyber | wmdp_chem | mmlu | mmlu_<subject> | file:PATH[::SUBJECT]",
    )
    data_dir: str | None = setting(
        None, "holds wmdp/ (a copy of cais/wmdp) and mmlu/ (cais/mmlu); hub: download (null: data.data_dir)"
    )
    num_fewshot: int = setting(0, "MMLU: examples from its dev split (lm-eval's first_n); WMDP has none")
    max_length: int | None = setting(None, "rows cut from the left to this many tokens (null: the model's length)")
    num_rows: int | None = setting(None, "first N questions of each task (null: all)")
    lm_eval_tasks: list[str] = setting(
        [], "also run these lm-eval tasks through the jaxunlearn adapter (needs lm-eval)"
    )
    lm_eval_include: str | None = setting(None, "a folder of custom lm-eval task YAMLs (lm-eval's include_path)")
    lm_eval_limit: int | None = setting(None, "lm-eval: at most this many documents per task")
