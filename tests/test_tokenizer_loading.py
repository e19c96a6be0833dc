"""HF tokenizers load as AutoTokenizer loads them, and a plain tokenizers-backend one
without importing torch (what every CLI start used to pay)."""

from __future__ import annotations

import json
import shutil

from conftest import run_python

TEXTS = ["Who wrote 'The Silent Forest'?", "  two  spaces,\nnew line; digits 12345 and émigré"]

CHILD = """
import json, sys
from jaxunlearn.checkpoints.tokenizer import load_hf_tokenizer
tok = load_hf_tokenizer(sys.argv[1])
texts = json.loads(sys.argv[2])
chat = tok.apply_chat_template([{"role": "user", "content": texts[0]}], tokenize=False, add_generation_prompt=True)
out = {"torch": "torch" in sys.modules, "class": type(tok).__name__, "ids": tok(texts)["input_ids"], "chat": chat}
print(json.dumps(out))
"""


def _auto(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def test_a_plain_fast_tokenizer_loads_without_torch_and_as_auto_tokenizer_does(tiny_lm):
    proc = run_python(CHILD, str(tiny_lm), json.dumps(TEXTS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["torch"] is False, "loading the tokenizer imported torch"
    auto = _auto(tiny_lm)
    assert got["class"] == type(auto).__name__
    assert got["ids"] == auto(TEXTS)["input_ids"]
    assert got["chat"] == auto.apply_chat_template(
        [{"role": "user", "content": TEXTS[0]}], tokenize=False, add_generation_prompt=True
    )


def test_other_tokenizer_classes_go_through_auto_tokenizer(tiny_lm, tmp_path):
    from jaxunlearn.checkpoints.tokenizer import load_hf_tokenizer

    directory = tmp_path / "gpt2_class"
    directory.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_lm / name).exists():
            shutil.copy(tiny_lm / name, directory / name)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GPT2Tokenizer"}))
    loaded, auto = load_hf_tokenizer(directory), _auto(directory)
    assert type(loaded) is type(auto) and type(loaded).__name__ != "TokenizersBackend"
    assert loaded(TEXTS)["input_ids"] == auto(TEXTS)["input_ids"]
