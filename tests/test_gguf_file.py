"""The struct-based GGUF reader gives what gguf-py's GGUFReader gives: every metadata value
and every tensor's bytes; damaged files are refused with the fix."""

from __future__ import annotations

import numpy as np
import pytest

from jaxunlearn.checkpoints.gguf_file import GGUFFile
from jaxunlearn.checkpoints.gguf_io import open_gguf
from jaxunlearn.errors import CheckpointError


def write_small_gguf(path):
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    w = GGUFWriter(str(path), "llama")
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["a", "b c", "\u00e9t\u00e9", ""])
    w.add_array("tokenizer.ggml.token_type", [1, 3, 1, 1])
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_int64("some.int64", -(2**40))
    w.add_float64("some.float64", 0.125)
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 8)).astype(np.float32),
        "f16": rng.standard_normal((2, 4, 8)).astype(np.float16),
        "vector": rng.standard_normal(5).astype(np.float32),
    }
    for name, x in tensors.items():
        w.add_tensor(name, x)
    q8 = rng.standard_normal((4, 64)).astype(np.float32)
    w.add_tensor("q8", quantize(q8, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors, q8


def test_reads_what_gguf_py_reads(tmp_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = tmp_path / "small.gguf"
    tensors, q8 = write_small_gguf(path)
    fast, reference = GGUFFile(path), GGUFReader(str(path))
    keys = [k for k in reference.fields if not k.startswith("GGUF.")]  # gguf-py's own header entries
    assert sorted(fast.fields) == sorted(keys)
    for key in keys:
        assert fast.fields[key] == reference.fields[key].contents(), key
    assert fast.fields["tokenizer.ggml.tokens"] == ["a", "b c", "\u00e9t\u00e9", ""]
    assert fast.fields["some.int64"] == -(2**40)
    for mine, theirs in zip(fast.tensors, reference.tensors, strict=True):
        assert (mine.name, mine.tensor_type) == (theirs.name, int(theirs.tensor_type))
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        got = dequantize(mine.data, mine.tensor_type).reshape(tuple(reversed(mine.shape)))
        np.testing.assert_array_equal(got, dequantize(theirs.data, theirs.tensor_type).reshape(got.shape))
    by_name = {t.name: t for t in fast.tensors}
    for name, x in tensors.items():
        t = by_name[name]
        np.testing.assert_array_equal(dequantize(t.data, t.tensor_type).reshape(x.shape), x.astype(np.float32))
    assert np.abs(dequantize(by_name["q8"].data, by_name["q8"].tensor_type).reshape(q8.shape) - q8).max() < 0.05


def test_damaged_files_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "small.gguf"
    write_small_gguf(path)
    data = path.read_bytes()
    cases = {"truncated.gguf": data[: len(data) - 40], "empty.gguf": b"", "text.gguf": b"not a gguf file at all\n" * 4}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="truncated or not a GGUF file"):
            open_gguf(tmp_path / name)


@pytest.mark.real_model
def test_the_real_smollm2_reads_as_gguf_py_reads_it():
    from gguf import GGUFReader

    from jaxunlearn.checkpoints.sources import resolve

    path = resolve("smollm2-135m-instruct").path
    fast, reference = GGUFFile(path), GGUFReader(str(path))
    keys = [k for k in reference.fields if not k.startswith("GGUF.")]
    assert sorted(fast.fields) == sorted(keys)
    assert all(fast.fields[k] == reference.fields[k].contents() for k in keys)
    for mine, theirs in zip(fast.tensors, reference.tensors, strict=True):
        assert (mine.name, mine.tensor_type, mine.shape) == (
            theirs.name,
            int(theirs.tensor_type),
            tuple(int(d) for d in theirs.shape),
        )
        np.testing.assert_array_equal(mine.data.reshape(-1), np.asarray(theirs.data).view(np.uint8).reshape(-1))
