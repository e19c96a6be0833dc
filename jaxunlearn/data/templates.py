"""Prompt/answer formats (SPEC section 4), and the tokenizer's own chat template on request."""

from __future__ import annotations

import dataclasses

import logging

from ..errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    prompt: str  # with {q}
    answer: str  # with {a}
    required_tokens: tuple[str, ...] = ()  # special tokens the tokenizer must have whole
    # generation starts after the answer template's prefix (Phi's "Answer:"); False: right
    # after the prompt, as TOFU's code prompts Phi ("Question: q\n", then the model writes)
    generation_prefix: bool = True

    def format(self, question: str, answer: str) -> tuple[str, str]:
        return self.prompt.format(q=question), self.answer.format(a=answer)


TEMPLATES = {
    "llama2-chat": Template("llama2-chat", "[INST] {q} [/INST]", "{a}"),
    "phi": Template("phi", "Question: {q}\n", "Answer: {a}"),
    "phi-tofu": Template("phi-tofu", "Question: {q}\n", "Answer: {a}", generation_prefix=False),
    "llama3-instruct": Template(
        "llama3-instruct",
        "<|start_header_id|>user<|end_header_id|>\n\n{q}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "{a}",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "chatml": Template(
        "chatml",
        "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
        "{a}<|im_end|>",
        ("<|im_start|>", "<|im_end|>"),
    ),
    "plain": Template("plain", "{q}\n", "{a}"),
}
CHAT = "chat"  # use tokenizer.apply_chat_template for the prompt
# the templates of one model family's chat tokens (phi and plain are plain text)
CHAT_TEMPLATES = ("llama2-chat", "llama3-instruct", "chatml")


class ChatTemplate:
    """The tokenizer's chat template as the prompt; the answer is plain text (EOS appended)."""

    name = CHAT
    required_tokens: tuple[str, ...] = ()

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("template 'chat' needs a tokenizer with a chat template; this tokenizer has none")
        self.tokenizer = tokenizer

    def format(self, question: str, answer: str) -> tuple[str, str]:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        return prompt, answer


def get_template(name: str, tokenizer=None):
    """A template by name, checked against the tokenizer's vocabulary."""
    if name == CHAT:
        template = ChatTemplate(tokenizer)
    elif name in TEMPLATES:
        template = TEMPLATES[name]
    else:
        raise DataError(f"unknown template {name!r}; known: {', '.join([*TEMPLATES, CHAT])}")
    if tokenizer is not None:
        check_template_tokens(template, tokenizer)
    return template


def check_template_tokens(template, tokenizer) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in template.required_tokens if t not in vocab]
    if missing:
        raise DataError(
            f"template {template.name!r} needs the token(s) {', '.join(missing)}, which this tokenizer lacks; "
            "choose the template of this model family (e.g. chatml for SmolLM2/Qwen, llama3-instruct for Llama-3)"
        )


def default_template_name(tokenizer) -> str:
    """The SPEC template matching a tokenizer's special tokens."""
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab:
        return "chatml"
    if "<|start_header_id|>" in vocab:
        return "llama3-instruct"
    if "<s>" in vocab and "</s>" in vocab:  # SentencePiece Llama-2 vocabulary
        return "llama2-chat"
    return "plain"


def template_for(name: str, tokenizer):
    """The template `name` (data.template), "auto" meaning the one the tokenizer's special
    tokens call for."""
    if name == "auto":
        name = default_template_name(tokenizer)
        log.info("template: %s (auto)", name)
    return get_template(name, tokenizer)
