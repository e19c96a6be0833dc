"""`load_pretrained` and `save_pretrained`: the HF-like front door to every format."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..models.attention_kernels import resolve as resolve_attention
from ..models.config import to_dtype
from ..models.lora import merge_lora
from ..models.stack import REMAT_POLICIES
from ..models.registry import family_for
from .tokenizer import load_hf_tokenizer, tokenizer_from_gguf
from . import gguf_io
from .convert import iter_hf_tensors, load_model
from .hf_flax import FILENAME as FLAX_FILE
from .host_copy import exporting_process
from .hf_flax import FlaxMsgpackSource, write_flax_msgpack
from .safetensors_io import SafetensorsSource, write_safetensors
from .sources import resolve
from .torch_bin import load_torch_bin, refuse

FORMATS = ("hf", "hf-flax")


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


def load_pretrained(
    path_or_hub_id,
    dtype: str = "float32",
    compute_dtype: str | None = None,
    mesh=None,
    rules=None,
    remat: str = "none",
    attention: str = "auto",
    allow_pickle: bool = False,
    with_tokenizer: bool = True,
    require_tokenizer: bool = False,
):
    """Load a checkpoint into a jaxunlearn model: returns (model, tokenizer).

    `path_or_hub_id`: an HF directory (safetensors, flax_model.msgpack, or - with
    allow_pickle - pytorch_model.bin), a .gguf file, a hub id, or a built-in asset name.
    `dtype` is the parameter dtype, `compute_dtype` the activation dtype (default: dtype).
    With `mesh`, every parameter is placed directly onto its sharding. `require_tokenizer`:
    a checkpoint without tokenizer files is an error (the tokenizer is None otherwise).
    `attention`: the fused-kernel dispatch of right-padded forwards (models.attention_kernels).
    """
    if remat not in REMAT_POLICIES:
        raise ConfigError(f"remat={remat!r} is not one of {', '.join(REMAT_POLICIES)}")
    to_dtype(dtype), to_dtype(compute_dtype or dtype)  # a bad dtype name fails here, with the choices
    ckpt = resolve(path_or_hub_id)
    if require_tokenizer and ckpt.kind != "gguf" and not any(ckpt.path.glob("tokenizer*")):
        raise _no_tokenizer(ckpt.path)
    resolve_attention(attention)  # a bad name fails here, with the choices
    runtime = dict(param_dtype=dtype, compute_dtype=compute_dtype or dtype, remat=remat, attention=attention)
    tokenizer = None
    if ckpt.kind == "gguf":
        reader = gguf_io.open_gguf(ckpt.path)
        config = gguf_io.config_from_gguf(reader, ckpt.path).replace(**runtime)
        source = gguf_io.GGUFSource(reader, config, ckpt.path)
        if with_tokenizer:
            tokenizer = tokenizer_from_gguf(reader, ckpt.path)
    else:
        hf = read_hf_config(ckpt.path)
        family = family_for(hf.get("model_type"))
        config = family.config_from_hf(hf).replace(**runtime)
        if ckpt.kind == "hf":
            source = SafetensorsSource(ckpt.path)
        elif ckpt.kind == "hf-flax":
            source = FlaxMsgpackSource(ckpt.path / FLAX_FILE, family.name_table)
        elif not allow_pickle:
            raise refuse(ckpt.path)
        else:
            source = load_torch_bin(ckpt.path)
        if with_tokenizer and any(ckpt.path.glob("tokenizer*")):
            tokenizer = load_hf_tokenizer(ckpt.path)
    model = load_model(config, source, mesh=mesh, rules=rules)
    return model, tokenizer


def load_tokenizer(path_or_hub_id):
    """Only the tokenizer of a checkpoint (HF directory, .gguf, hub id or built-in asset)."""
    ckpt = resolve(path_or_hub_id)
    if ckpt.kind == "gguf":
        return tokenizer_from_gguf(gguf_io.open_gguf(ckpt.path), ckpt.path)
    if not any(ckpt.path.glob("tokenizer*")):
        raise _no_tokenizer(ckpt.path)
    return load_hf_tokenizer(ckpt.path)


def _no_tokenizer(path: Path) -> CheckpointError:
    return CheckpointError(
        f"no tokenizer files (tokenizer.json / tokenizer_config.json) in {path}: copy them from the model it was "
        "made from, or save it with save_pretrained(model, tokenizer, ...)"
    )


def parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    text = str(size).strip().upper()
    try:
        for unit in sorted(units, key=len, reverse=True):
            if text.endswith(unit):
                value = int(float(text[: -len(unit)]) * units[unit])
                break
        else:
            value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"max shard size {size!r} is not a size: use e.g. 5GB, 500MB, 2GiB or a byte count")
    return value


def save_pretrained(
    model,
    tokenizer,
    out_dir,
    format: str = "hf",
    overwrite: bool = False,
    max_shard_size: str | int = "5GB",
) -> Path:
    """Write the model (and tokenizer) so transformers loads it.

    format "hf": config.json + model.safetensors (sharded past `max_shard_size`), written
    tensor by tensor from the (possibly sharded) parameters: the host holds at most one
    shard, no device the whole model;
    format "hf-flax": config.json + flax_model.msgpack (transformers 4.x Flax layout).
    The directory appears atomically; an existing one is refused unless `overwrite`.
    With several JAX processes this is collective: every process calls it, process 0 writes.
    """
    if format not in FORMATS:
        raise CheckpointError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    writer = exporting_process()
    if writer and out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; choose another destination or pass overwrite=True (--overwrite)")
    model = merge_lora(model)  # adapters folded into the kernels: a plain checkpoint
    config = model.config
    family = family_for(config.model_type)
    if not writer:  # join the per-tensor fetches process 0 makes, write nothing
        for _ in iter_hf_tensors(model):
            pass
        return out
    with atomic_directory(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(family.config_to_hf(config), indent=2, sort_keys=True) + "\n")
        if format == "hf":
            write_safetensors(((n, a) for n, a, _ in iter_hf_tensors(model)), tmp, parse_size(max_shard_size))
        else:
            tensors = list(iter_hf_tensors(model))
            write_flax_msgpack([(n, a) for n, a, _ in tensors], {n: k for n, _, k in tensors}, tmp / FLAX_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return out


def _open_up(directory: Path) -> None:
    """Give a directory the permissions a plain mkdir would (0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)


def remove_orphan_temporaries(parent: Path, name: str) -> list[Path]:
    """Remove what an `atomic_directory(parent / name)` killed mid-write left behind."""
    removed = sorted([*Path(parent).glob(f".{name}.tmp-*"), *Path(parent).glob(f".{name}.old-*")])
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


@contextlib.contextmanager
def atomic_directory(out: Path):
    """Yield a temporary sibling directory; on success it replaces `out`, on error it vanishes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    _open_up(tmp)  # mkdtemp made it 0700; an export is for others to read too
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
