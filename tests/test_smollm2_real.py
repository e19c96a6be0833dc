"""The real SmolLM2-135M-Instruct from its GGUF asset: it answers, and it knows English."""

from __future__ import annotations

import numpy as np
import pytest

from jaxunlearn.evaluation.generation import encode_prompts, greedy_generate, strip_after_eos
from jaxunlearn.models.registry import num_parameters

pytestmark = pytest.mark.real_model

SENTENCE = (
    "The museum opened a new exhibition about the history of the city, and many families "
    "visited it during the summer holidays to learn how people lived a hundred years ago."
)


def mean_nll(model, tokenizer, text: str) -> float:
    ids = np.asarray([tokenizer(text, add_special_tokens=False)["input_ids"]], np.int32)
    logits = np.asarray(model(ids))[0, :-1].astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    token_logp = logits[np.arange(ids.shape[1] - 1), ids[0, 1:]] - logz
    return float(-token_logp.mean())


def test_config_read_from_gguf(smollm2):
    model, _ = smollm2
    c = model.config
    assert (c.num_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == (9, 3, 64, 49152)
    assert c.tie_word_embeddings and c.rope_theta == 1e5
    assert abs(num_parameters(c) - 134.5e6) < 0.1e6


def test_answers_capital_of_france(smollm2):
    model, tokenizer = smollm2
    ids, mask, pad = encode_prompts(tokenizer, ["What is the capital of France?"], chat=True)
    tokens = greedy_generate(model, ids, mask, 24, tokenizer.eos_token_id, pad)
    answer = tokenizer.decode(strip_after_eos(tokens, tokenizer.eos_token_id)[0])
    assert "Paris" in answer, answer


def test_english_is_likely_and_shuffled_words_are_not(smollm2):
    model, tokenizer = smollm2
    words = SENTENCE.split()
    shuffled = " ".join(np.random.RandomState(0).permutation(words))
    fluent, scrambled = mean_nll(model, tokenizer, SENTENCE), mean_nll(model, tokenizer, shuffled)
    assert fluent < 4.0, fluent
    assert scrambled > 6.0, scrambled


def test_gguf_tokenizer_splits_digits_and_knows_chatml(smollm2):
    _, tokenizer = smollm2
    assert tokenizer.tokenize("In 2023") == ["In", "Ġ", "2", "0", "2", "3"]
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]
    assert tokenizer("<|im_start|>user")["input_ids"][0] == 1  # special token kept whole
    text = "Hello, world! 123 ünïcode"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_export_of_real_model_reloads_in_transformers(smollm2, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import jaxunlearn

    model, tokenizer = smollm2
    out = jaxunlearn.save_pretrained(model, tokenizer, tmp_path / "smollm2-hf")
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    ids = np.asarray([tokenizer(SENTENCE)["input_ids"]], np.int32)
    assert reloaded_tok(SENTENCE)["input_ids"] == ids[0].tolist()
    torch_model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        ref = torch_model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert np.abs(np.asarray(model(ids)) - ref).max() < 1e-3  # 30 layers of fp32 reordering
