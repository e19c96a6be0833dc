"""NLI judges for the entailment score: (premise, hypothesis) -> label.

The metric is judge-agnostic. `HubNLIJudge` runs the paper's DeBERTa NLI model through
transformers where a hub (and torch) is reachable; `CausalLMNLIJudge` is the offline
fallback: a causal LM asked zero-shot whether the premise implies the hypothesis. Every
report names the judge that produced its entailment numbers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import JaxUnlearnError

PAPER_NLI_MODEL = "sileod/deberta-v3-base-tasksource-nli"
ENTAILMENT = "entailment"


class HubNLIJudge:
    def __init__(self, model_name: str = PAPER_NLI_MODEL):
        try:
            from transformers import pipeline

            self.pipe = pipeline("text-classification", model=model_name)
        except Exception as e:
            raise JaxUnlearnError(
                f"cannot load the NLI model {model_name!r} ({type(e).__name__}); without a hub use "
                "eval.nli_judge=causal-lm (a zero-shot fallback, reported as such) or eval.nli_judge=none"
            ) from None
        self.name = model_name

    def labels(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        out = self.pipe([{"text": p, "text_pair": h} for p, h in zip(premises, hypotheses)])
        return [r["label"].lower() for r in out]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _last_logits(graphdef, params, ids, mask):
    return nnx.merge(graphdef, params).forward(ids, mask).logits[:, -1]


class CausalLMNLIJudge:
    """Zero-shot NLI with a chat LM: 'entailment' when log p(yes) - log p(no) exceeds the
    same margin on a content-free pair ("N/A", "N/A"): contextual calibration (Zhao et
    al. 2021) removes the small model's prior toward "no". A small LM is a weak judge;
    reports say which judge produced the numbers."""

    QUESTION = "Premise: {p}\nHypothesis: {h}\nDoes the premise imply the hypothesis? Answer with yes or no."

    def __init__(self, model, tokenizer, model_name: str, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.name = f"zero-shot causal-LM NLI with {model_name} (offline fallback, not {PAPER_NLI_MODEL})"
        self.yes = self._first_ids(["yes", "Yes", " yes", " Yes"])
        self.no = self._first_ids(["no", "No", " no", " No"])
        self.baseline = float(self.margins(["N/A"], ["N/A"])[0])

    def _first_ids(self, words) -> np.ndarray:
        return np.unique([self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words])

    def labels(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        return [ENTAILMENT if m > self.baseline else "not_entailment" for m in self.margins(premises, hypotheses)]

    def margins(self, premises: list[str], hypotheses: list[str]) -> np.ndarray:
        """log p(yes) - log p(no) for the answer's first token, per pair."""
        from .generation import encode_prompts

        graphdef, params = nnx.split(self.model)
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        out = []
        for start in range(0, len(premises), self.batch_size):
            texts = [
                self.QUESTION.format(p=p, h=h)
                for p, h in zip(premises[start : start + self.batch_size], hypotheses[start : start + self.batch_size])
            ]
            real = len(texts)
            texts += [texts[-1]] * (self.batch_size - real)
            ids, mask, _ = encode_prompts(self.tokenizer, texts, chat=chat, round_width=True)
            logp = jax.nn.log_softmax(_last_logits(graphdef, params, jnp.asarray(ids), jnp.asarray(mask)), -1)
            logp = np.asarray(logp)[:real]
            yes = np.logaddexp.reduce(logp[:, self.yes], axis=-1)
            no = np.logaddexp.reduce(logp[:, self.no], axis=-1)
            out.append(yes - no)
        return np.concatenate(out)
