"""A jaxunlearn model as an lm-eval model: `--model jaxunlearn --model_args pretrained=DIR`.

lm-eval (the optional extra `jaxunlearn[lm-eval]`) has no plugin discovery for models, so
this module registers the name when imported; `jaxunlearn-lm-eval` (or
`python -m jaxunlearn.suites.lm_eval_model`) is lm-eval's own command line with it
imported. Tokenization is lm-eval's (TemplateLM's encode_pair, the rolling windows of
loglikelihood_rolling, its stop sequences); the scoring is jaxunlearn's prefix-tree pass
(requests sharing a context compute it once) and its batched decoder, on every device
(the data axis of a mesh over all of them).
"""

from __future__ import annotations

import numpy as np

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
    from lm_eval import utils as lm_utils
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError("the lm-eval adapter needs lm-eval: pip install 'jaxunlearn[lm-eval]'") from e

from ..checkpoints.api import load_pretrained
from ..data.tokenize import IGNORE, TokenizedRows, pad_token_id
from ..evaluation.evaluate import place_for_evaluation
from ..evaluation.kernels import generate_texts
from ..evaluation.prefix_trees import score_prefix_trees
from .choice import _encode


@register_model("jaxunlearn")
class JaxUnlearnLM(TemplateLM):
    """loglikelihood, loglikelihood_rolling and generate_until on a jaxunlearn model."""

    def __init__(
        self,
        pretrained=None,
        dtype: str = "float32",
        batch_size: int | str = 16,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        allow_pickle: bool = False,
        model=None,
        tokenizer=None,
        **_ignored,
    ):
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ValueError("jaxunlearn model: pass pretrained=DIR (a checkpoint or built-in asset name)")
            model, tokenizer = load_pretrained(
                str(pretrained), dtype=dtype, allow_pickle=bool(allow_pickle), require_tokenizer=True
            )
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = 16 if str(batch_size) == "auto" else int(str(batch_size).split(":")[0])
        self._max_length = int(max_length) if max_length else int(model.config.max_position_embeddings)
        self.max_gen_toks = int(max_gen_toks)
        self.model, self.mesh = place_for_evaluation(model, self.batch_size)

    # --- tokens ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is not None:
            return list(self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"])
        return _encode(self.tokenizer, string)

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # --- scoring ---------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of log-probs, greedy?) of each continuation after its context, the row cut from
        the left to max_length + 1 tokens as lm-eval's HF backend does."""
        rows = TokenizedRows([], [])
        for _, context_enc, continuation_enc in requests:
            ids = np.asarray((list(context_enc) + list(continuation_enc))[-(self.max_length + 1) :], np.int32)
            labels = np.full(len(ids), IGNORE, np.int32)
            labels[len(ids) - len(continuation_enc) :] = ids[len(ids) - len(continuation_enc) :]
            rows.ids.append(ids)
            rows.labels.append(labels)
        if not rows.ids:
            return []
        scores = score_prefix_trees(
            self.model, rows, pad_token_id(self.tokenizer), np.ones(len(rows), bool), self.batch_size, self.mesh
        )
        return [(float(lp.sum()), bool(np.all(ok))) for lp, ok in zip(scores.token_logp, scores.correct)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, context, continuation))
                owner.append(i)
        results = self._loglikelihood_tokens(windows)
        totals = np.zeros(len(requests))
        for i, (ll, _) in zip(owner, results):
            totals[i] += ll
        return [float(x) for x in totals]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample) continuations, cut at the request's stop
        sequences and EOS; requests with the same settings are decoded in batches."""
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        settings = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            temperature = float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0
            settings.append((context, until, int(kwargs["max_gen_toks"]), temperature))
            groups.setdefault((tuple(until), int(kwargs["max_gen_toks"]), temperature), []).append(i)
        for (until, new_tokens, temperature), members in groups.items():
            if new_tokens >= self.max_length:
                raise ValueError(f"max_gen_toks {new_tokens} must be below the model's length {self.max_length}")
            prompts = [
                np.asarray(self.tok_encode(settings[i][0])[-(self.max_length - new_tokens) :], np.int32)
                for i in members
            ]
            texts = generate_texts(
                self.model,
                self.tokenizer,
                prompts,
                pad_token_id(self.tokenizer),
                self.tokenizer.eos_token_id,
                self.batch_size,
                budgets=np.full(len(prompts), new_tokens),
                temperature=temperature,
                strip=False,
            )
            for i, text in zip(members, texts):
                out[i] = postprocess_generated_text(text, list(until), None)
        return out


def main() -> None:
    """lm-eval's command line, with `--model jaxunlearn` registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
