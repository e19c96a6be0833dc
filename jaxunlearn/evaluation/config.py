"""The evaluation section of the run config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import ConfigError
from ..settings import setting


def check_answer_order(answers_from_scoring: bool | None, overlap_generation: bool | None) -> None:
    """Refuse both true: answers from scoring wait for the scores, answers beside scoring
    run while they are computed."""
    if answers_from_scoring and overlap_generation:
        raise ConfigError(
            "eval.answers_from_scoring=true decodes answers after scoring, eval.overlap_generation=true beside "
            "it: set one of them to null or false"
        )


@dataclasses.dataclass
class EvalSection:
    benchmark: Literal["tofu", "muse", "choice"] = setting(
        "tofu",
        "what `eval` runs: tofu (eval.sets: TOFU / Closer Look / MIA), muse (the muse section) or choice "
        "(multiple choice and lm-eval tasks: the choice section)",
    )
    sets: list[str] = setting(
        ["forget", "retain", "real_authors", "world_facts"],
        "evaluation sets: forget, retain, real_authors, world_facts (holdout added for MIA)",
    )
    forget_split: str | None = setting(None, "forget evaluation split (null: data.forget_split + _perturbed)")
    holdout_split: str | None = setting(
        None, "MIA holdout split (null: the holdout of the forget split's size; none: skip)"
    )
    num_rows: int | None = setting(300, "first N rows of each set (TOFU: 300); null: all")
    batch_size: int = setting(16, "scoring: rows per batch (TOFU sets pack batch_size x 64 prefix-tree nodes)")
    generation_batch_size: int | None = setting(
        None,
        "rows per generation batch; null: the fewest even batches of at most 64 rows per device "
        "(a decoding step reads every weight whatever its rows, so fuller steps are cheaper per answer)",
    )
    overlap_generation: bool | None = setting(
        None,
        "decode answers on a second thread while texts are scored (TOFU sets, MUSE); null: on for a "
        "single-process CPU run on one device (decoding's attention leaves a core idle), off elsewhere",
    )
    answers_from_scoring: bool | None = setting(
        None,
        "TOFU sets: start each greedy answer with the reference answer's tokens that scoring found the "
        "model's argmax to give (fp32 models), and decode only the rest; the same answers, far fewer steps "
        "for a model that reproduces its answers. null: on whenever answers are decoded after scoring "
        "(overlap_generation off), as on accelerators; on a CPU set true to evaluate finetuned models",
    )
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
    keep_models: bool = setting(
        False, "unlearn with every_steps: also export each evaluated step's model (eval/step_k/model)"
    )
    best_by: str | None = setting(
        None,
        "unlearn with every_steps: pick the best evaluated step into best.json, e.g. max:forget_quality, "
        "min:forget.probability, max:model_utility (a headline key or SET.METRIC)",
    )
