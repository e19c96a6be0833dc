"""Data: sources (TOFU, Closer Look, user files), templates, tokenization and batches."""

from .batching import STREAMS, BatchIterator, build_streams, draw_pairing, pad_rows
from .eval_sets import EvalSet, build_eval_set, left_pad
from .sources import (
    continual_task,
    default_data_dir,
    load_qa_file,
    load_real_world,
    load_refusals,
    load_text_file,
    load_tofu,
)
from .templates import get_template
from .tokenize import IGNORE, TokenizedRows, encode_qa, encode_text_windows, pad_token_id

__all__ = [
    "STREAMS",
    "BatchIterator",
    "build_streams",
    "draw_pairing",
    "pad_rows",
    "EvalSet",
    "build_eval_set",
    "left_pad",
    "continual_task",
    "default_data_dir",
    "load_qa_file",
    "load_real_world",
    "load_refusals",
    "load_text_file",
    "load_tofu",
    "get_template",
    "IGNORE",
    "TokenizedRows",
    "encode_qa",
    "encode_text_windows",
    "pad_token_id",
]
