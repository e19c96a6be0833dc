"""A GGUF file's metadata and tensor table, read straight from the bytes.

gguf-py's GGUFReader builds every metadata value out of numpy memmap views, one per item:
SmolLM2's vocabulary and merges (98k strings) took it 6 s per load. Here the header is
parsed with struct from one memory map (well under a second), and each tensor is a uint8
view of its bytes, [rows, bytes per row], which `gguf.quants.dequantize` accepts for
every type. Little-endian GGUF versions 2 and 3 (what llama.cpp writes).
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from pathlib import Path

import numpy as np

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
# 10 u64, 11 i64, 12 f64
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclasses.dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: innermost dimension first
    tensor_type: int  # a gguf.GGMLQuantizationType value
    data: np.ndarray  # uint8 [rows, bytes per row]


class GGUFFile:
    """`fields`: metadata key -> value (str, number, bool or list); `tensors`: the table."""

    def __init__(self, path: str | Path):
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        buf = self._map
        if buf[:4] != MAGIC:
            raise ValueError("no GGUF magic at the start")
        (version,) = struct.unpack_from("<I", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (or a big-endian file); versions 2 and 3 are read")
        n_tensors, n_fields = struct.unpack_from("<QQ", buf, 8)
        self._pos = 24
        self.fields = {}
        for _ in range(n_fields):
            key = self._string()
            (kind,) = self._unpack("<I")
            self.fields[key] = self._value(kind)
        table = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q")
            kind, offset = self._unpack("<IQ")
            table.append((name, tuple(int(d) for d in dims), int(kind), int(offset)))
        alignment = int(self.fields.get("general.alignment", DEFAULT_ALIGNMENT))
        start = -(-self._pos // alignment) * alignment
        whole = np.frombuffer(buf, np.uint8)
        self.tensors = []
        for name, dims, kind, offset in table:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            row_bytes = dims[0] // block * block_bytes
            rows = int(np.prod(dims[1:], dtype=np.int64))  # 1 for a vector
            at = start + offset
            if at + rows * row_bytes > len(buf):
                raise ValueError(f"tensor {name} runs past the end of the file (truncated)")
            data = whole[at : at + rows * row_bytes].reshape(rows, row_bytes)
            self.tensors.append(GGUFTensor(name, dims, kind, data))

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self._map, self._pos)
        start = self._pos + 8
        self._pos = start + n
        return self._map[start : self._pos].decode("utf-8")  # strict, as gguf-py: bad bytes mean a damaged file

    def _value(self, kind: int):
        if kind == STRING:
            return self._string()
        if kind == ARRAY:
            item, count = self._unpack("<IQ")
            if item == STRING:
                return [self._string() for _ in range(count)]
            if item in SCALARS:  # one unpack for the whole array
                return list(self._unpack(f"<{count}{SCALARS[item][1]}"))
            return [self._value(item) for _ in range(count)]
        if kind not in SCALARS:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self._unpack(SCALARS[kind])[0]
