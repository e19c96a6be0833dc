"""The streams a batch can carry, declared as data: each is a question source and an answer
source. Objective terms name the streams they read; the data setup tokenizes exactly those,
and knows from this table which need a retain set or refusal strings."""

from __future__ import annotations

# stream -> (question from, answer from); "retain" means the forget row's paired retain row
STREAM_SOURCES: dict[str, tuple[str, str]] = {
    "forget": ("forget", "forget"),
    "retain": ("retain", "retain"),
    "forget_idk": ("forget", "refusal"),
    "retain_idk": ("retain", "refusal"),
    "forget_mismatch": ("forget", "retain"),
    # Chen et al.'s expected output per forget row: its `expected` field, else the reference
    # answer of a row flagged as hallucinated, else the paired refusal (harmful, private, TOFU)
    "forget_expected": ("forget", "expected"),
}
STREAMS = tuple(STREAM_SOURCES)


def needs_retain(streams) -> list[str]:
    """The streams that read the paired retain row."""
    return [s for s in streams if "retain" in STREAM_SOURCES[s]]


def needs_refusals(streams) -> list[str]:
    """The streams whose answer is a refusal string."""
    return [s for s in streams if STREAM_SOURCES[s][1] in ("refusal", "expected")]
