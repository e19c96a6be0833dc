"""Bad checkpoints give one clear line naming the file/tensor/field and a non-zero exit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run_cli
from jaxunlearn.cli import main


@pytest.fixture
def ckpt(tiny_checkpoints, tmp_path):
    """A writable copy of a tiny checkpoint."""
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints("llama_gqa"), out)
    return out


def convert_fails(capsys, *args) -> str:
    rc = main(["convert", *map(str, args)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def edit_tensors(path, edit):
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_config(ckpt, tmp_path, capsys):
    (ckpt / "config.json").unlink()
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "missing config.json" in err and str(ckpt) in err
    assert not (tmp_path / "out").exists()


def test_unsupported_model_type_lists_supported(ckpt, tmp_path, capsys):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "bert"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "'bert'" in err and "llama" in err and "mistral" in err and "qwen2" in err


def test_missing_field(ckpt, tmp_path, capsys):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert "'hidden_size'" in convert_fails(capsys, ckpt, tmp_path / "out")


def test_missing_tensor(ckpt, tmp_path, capsys):
    edit_tensors(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "'model.layers.1.mlp.up_proj.weight' is missing" in err
    assert not (tmp_path / "out").exists()


def test_wrong_shape(ckpt, tmp_path, capsys):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)

    edit_tensors(ckpt, shrink)
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "'model.layers.0.self_attn.k_proj.weight'" in err and "(16, 64)" in err and "(32, 64)" in err


def test_truncated_safetensors(ckpt, tmp_path, capsys):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "model.safetensors" in err and "truncated" in err
    assert not (tmp_path / "out").exists()


def test_pickled_bin_refused_without_opt_in(ckpt, tmp_path, capsys):
    import torch

    tensors = load_file(str(ckpt / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    err = convert_fails(capsys, ckpt, tmp_path / "out")
    assert "pytorch_model.bin" in err and "--allow-pickle" in err
    assert main(["convert", str(ckpt), str(tmp_path / "ok"), "--allow-pickle"]) == 0


def test_existing_destination_needs_overwrite(ckpt, tmp_path, capsys):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    err = convert_fails(capsys, ckpt, dst)
    assert "already exists" in err and "--overwrite" in err
    assert (dst / "keep.txt").read_text() == "mine"
    assert main(["convert", str(ckpt), str(dst), "--overwrite", "--to", "hf-flax"]) == 0
    assert (dst / "flax_model.msgpack").exists() and not (dst / "keep.txt").exists()


def test_not_a_path_nor_hub_id(tmp_path, capsys):
    assert "no such file" in convert_fails(capsys, tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.subprocess
def test_cli_process_exit_code_and_offline_hub(tmp_path):
    proc = run_cli("convert", "some-org/some-model", str(tmp_path / "out"), env_extra={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "hub" in proc.stderr and "local directory" in proc.stderr
