"""The training, output and continual sections of the run config."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from ..errors import ConfigError
from ..settings import setting


@dataclasses.dataclass
class TrainSection:
    lr: float = setting(1e-5, "peak learning rate (linear warmup, then the schedule)")
    schedule: Literal["linear", "constant"] = setting(
        "linear", "after the warmup: linear (decay to 0 at the last step, the papers') or constant (MUSE, WMDP)"
    )
    epochs: float = setting(5.0, "epochs over the forget set; steps = int(epochs * rows) // batch_size")
    batch_size: int = setting(32, "effective (global) batch of forget rows per step")
    micro_batches: int = setting(1, "gradient accumulation inside the step (exact: equals the full batch)")
    loss_group_rows: int | None = setting(
        None,
        "null: each term's mean over the global batch; k: a mean per group of k rows averaged over the "
        "groups, as the paper's code (4 rows x 4 accumulation steps x 2 GPUs)",
    )
    weight_decay: float = setting(0.01, "AdamW weight decay (not on norms and biases)")
    adam_b1: float = setting(0.9, "AdamW beta1")
    adam_b2: float = setting(0.999, "AdamW beta2")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    clip_grad_norm: float | None = setting(None, "global gradient-norm clipping (null: none, as the paper)")
    warmup_steps: int | None = setting(None, "null: one epoch when an epoch has more than one step")
    max_steps: int | None = setting(None, "null: the paper's formula from epochs")
    seed: int = setting(1001, "data order, pairing and PRNG seed")
    precompute_reference: bool = setting(
        False, "compute the reference's sequence NLLs once (NPO, DPO) and drop the reference model from the step"
    )
    profile_steps: str | None = setting(
        None, "N..M: a jax.profiler trace of steps N..M (1-based) in <output dir>/profile, for TensorBoard or XProf"
    )
    vocab_block: int = setting(
        16384,
        "vocabulary columns per block of the LM head's statistics in the train step (forward and backward), "
        "so no [B, T, V] fp32 logits are held; 0: whole logits",
    )
    low_precision_params: bool = setting(
        False,
        "allow training bf16 / fp16 parameters (most updates round away at "
        "small learning rates; prefer model.dtype=float32 model.compute_dtype=bfloat16)",
    )


@dataclasses.dataclass
class OutputSection:
    dir: str | None = setting(
        None,
        "run directory: run.json, metrics.jsonl, checkpoints/, model/ "
        "(null: runs/<command>, e.g. runs/unlearn, runs/eval); a gs:// or s3:// URL writes checkpoints there "
        "directly and copies the rest up from staging_dir (docs/guides/launching.md)",
    )
    staging_dir: str | None = setting(
        None,
        "output.dir is a URL: the local folder under which the run's other files are written before they are "
        "copied up (null: the system's temporary directory); it must hold the HF export",
    )
    checkpoint_every: int | None = setting(None, "checkpoint every N steps (and at the end: final_checkpoint)")
    checkpoint_minutes: float | None = setting(
        30.0, "also checkpoint when this many minutes passed since the last save (null: off)"
    )
    keep_checkpoints: int = setting(2, "checkpoints kept")
    final_checkpoint: bool = setting(
        True,
        "checkpoint the finished run (what --resume with more steps continues from); false: the export is all "
        "it keeps, and saves writing parameters and optimizer state (12 bytes per parameter in fp32 AdamW)",
    )
    export: bool = setting(True, "write the final model as an HF safetensors directory (model/)")
    export_hf_flax: bool = setting(False, "also write an HF-Flax msgpack directory (model-hf-flax/)")
    export_peft: bool = setting(
        True, "LoRA mode: also write the adapters alone in PEFT's format (adapter/), beside the merged model/"
    )


@dataclasses.dataclass
class ContinualSection:
    split: str | None = setting(
        None, "forget01 | forget05 | forget10 pool of the Closer Look data: run its tasks one after another"
    )
    tasks: list[int] = setting([], "task ids in order (empty: every task)")
    fix_reference: bool = setting(False, "reference = the original model instead of the previous task's result")


def parse_window(text: str | None) -> tuple[int, int] | None:
    """'N..M' -> (N, M), 1-based and inclusive; None when unset. (Not N:M: YAML reads 2:2 as
    the base-60 integer 122.)"""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(
            f"train.profile_steps={text!r}: write N..M with 1 <= N <= M (1-based steps, inclusive), e.g. 3..5"
        )
    return int(m.group(1)), int(m.group(2))
