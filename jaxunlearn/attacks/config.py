"""The attack section of the run config (`jaxunlearn attack`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..settings import setting

ATTACKS = ("relearn", "quantize", "probes", "extract")


@dataclasses.dataclass
class AttackSection:
    target_model: str | None = setting(
        None, "the model before unlearning (recovery is measured toward it); null: no recovery ratios"
    )
    retain_model: str | None = setting(None, "a model never trained on the forget set, shown as the floor")
    attacks: list[str] = setting(list(ATTACKS), "which attacks to run: relearn, quantize, probes, extract")
    relearn_rows: int = setting(5, "relearning: k rows, taken from the end of the forget (or retain) data")
    relearn_data: Literal["forget", "retain"] = setting("forget", "relearning data: forget rows or retain rows")
    relearn_steps: list[int] = setting([2, 5, 10], "relearning: evaluate after each of these step counts")
    relearn_lr: float = setting(
        1e-5, "relearning peak learning rate (AdamW, no warmup, linear decay to 0 at the last step count)"
    )
    relearn_batch_size: int = setting(4, "relearning batch size")
    quantize_bits: list[int] = setting([8, 4], "weight quantization: bits (round-to-nearest, symmetric)")
    quantize_group_size: int | None = setting(
        None, "null: one scale per output channel; N: one per group of N input rows of each channel"
    )
    probes: list[str] = setting(
        ["paraphrase", "role_play", "fiction", "in_context", "typos"],
        "prompt probes by name (jaxunlearn/attacks/probes.yaml, plus attack.probes_file)",
    )
    probes_file: str | None = setting(None, "a YAML file of extra or replacing probes (same schema as probes.yaml)")
    extract_samples: int = setting(8, "extraction: sampled answers per question")
    extract_temperature: float = setting(1.0, "extraction: sampling temperature")
    extract_threshold: float = setting(
        0.5, "extraction: an answer counts as recovered when a sample's ROUGE-L recall reaches this"
    )
    seed: int = setting(0, "seed of sampling, typos and in-context example choice")
