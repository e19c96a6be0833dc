"""Model families keyed by Hugging Face model_type; importing a family file registers it
(models/registry.py imports none of them). Adding a family: one file plus its name here
(docs/dev/adding-a-family.md)."""

from . import gemma, gpt2, gpt_neox, llama_family, phi  # noqa: F401
