"""LoRA adapters in PEFT's format (adapter_config.json + adapter_model.safetensors), out
and in: `peft.PeftModel.from_pretrained(base, DIR)` loads what `save_peft_adapters` writes
onto the base model, and `load_peft_adapters` starts a LoRA run from PEFT's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..models.lora import add_lora
from ..models.registry import family_for
from .api import atomic_directory
from .host_copy import exporting_process, host_array

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's wrapper around the transformers model


def _module_names(model) -> dict[str, str]:
    """Our projection parameter -> its HF module pattern (model.layers.{i}.self_attn.q_proj)."""
    table = {}
    for path, hf, _gguf, kind in family_for(model.config.model_type).name_table:
        if path.startswith("layers/") and hf.endswith(".weight") and kind == "linear":
            table[path.removeprefix("layers/")] = hf.removesuffix(".weight")
    return table


def save_peft_adapters(model, out_dir, base_model: str | None = None) -> Path:
    """Write the model's adapters alone in PEFT's layout (lora_A [r, in], lora_B [out, r] per layer).
    Collective with several JAX processes (each adapter is fetched by all; process 0 writes)."""
    from safetensors.numpy import save_file

    spec = model.config.lora
    if spec is None:
        raise CheckpointError("the model has no LoRA adapters to save (models.lora.add_lora, or lora.rank > 0)")
    modules = _module_names(model)
    missing = [t for t in spec.targets if t not in modules]
    if missing:
        raise CheckpointError(f"PEFT export: {missing} of {model.config.model_type} are not nn.Linear modules in HF")
    tensors = {}
    for name in spec.targets:
        a = host_array(getattr(model.layers, f"{name}_lora_a")[...]).astype(np.float32)
        b = host_array(getattr(model.layers, f"{name}_lora_b")[...]).astype(np.float32)
        for i in range(a.shape[0]):
            module = PREFIX + modules[name].format(i=i)
            tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a[i].T)
            tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b[i].T)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "use_rslora": spec.rslora,
        "target_modules": sorted({modules[t].rsplit(".", 1)[-1] for t in spec.targets}),
        "lora_dropout": spec.dropout,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": base_model,
        "init_lora_weights": True,
        "modules_to_save": None,
    }
    out = Path(out_dir)
    if not exporting_process():
        return out
    with atomic_directory(out) as tmp:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
    return out


def load_peft_adapters(model, directory, seed: int = 0):
    """Add the PEFT adapters in `directory` to `model` (its base), values and all."""
    from safetensors.numpy import load_file

    import jax.numpy as jnp

    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory} holds no readable {CONFIG} ({e}); give a PEFT adapter directory") from None
    if config.get("peft_type") != "LORA" or config.get("fan_in_fan_out") or config.get("bias", "none") != "none":
        raise CheckpointError(f"{directory}: only plain LoRA adapters (no biases, fan_in_fan_out false) load")
    modules = _module_names(model)
    wanted = set(config["target_modules"])
    targets = [name for name, pattern in modules.items() if pattern.rsplit(".", 1)[-1] in wanted]
    if not targets:
        raise CheckpointError(f"{directory}: target_modules {sorted(wanted)} name no projection of this model")
    rank, alpha, rslora = int(config["r"]), float(config["lora_alpha"]), bool(config.get("use_rslora"))
    add_lora(model, rank, alpha, targets, rslora, seed, float(config.get("lora_dropout") or 0.0))
    tensors = load_file(str(directory / WEIGHTS))
    for name in model.config.lora.targets:
        for part, key in (("lora_a", "lora_A"), ("lora_b", "lora_B")):
            variable = getattr(model.layers, f"{name}_{part}")
            layers = []
            for i in range(variable.shape[0]):
                tensor_name = f"{PREFIX}{modules[name].format(i=i)}.{key}.weight"
                if tensor_name not in tensors:
                    raise CheckpointError(f"{directory / WEIGHTS} lacks {tensor_name}")
                layers.append(tensors[tensor_name].T)
            variable.set_value(jnp.asarray(np.stack(layers), variable.dtype))
    return model
