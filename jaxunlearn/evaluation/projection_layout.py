"""Which way decoding multiplies its layer projections: x @ W ("rows") or W's transpose
times xᵀ ("columns", `layers.linear_transposed`).

XLA:CPU's kernels run a few-row product at different speeds in the two forms, and which
is faster depends on the CPU. Measured on SmolLM2's unrolled decoding (fp32, session of
2026-12-02, thirteenth) on an Intel Xeon VM (2 cores, AVX-512, AMX): "columns" took a
step from 85.3 to 77.2 ms at 16 rows and from 51.3 to 43.1 ms at 4 rows, with the same
tokens. On the AMD EPYC VMs of earlier sessions "columns" was never measured (a related
form, x @ W_tᵀ, was slower there), so "auto" keeps "rows" on them. A quick probe was
tried and dropped: products timed alone, even over 8 layers' worth of distinct weights,
ranked the forms the other way round from the decoding loop at 4 rows. The two forms add
in a different order, so logits differ in the last bits; pass the layout to pin it.
"""

from __future__ import annotations

import functools

import jax

PROJECTION_LAYOUTS = ("auto", "rows", "columns")


def projection_layout(layout: str = "auto") -> str:
    """The layout decoding uses, "rows" or "columns": `layout` itself, or under "auto"
    "columns" on an Intel CPU and "rows" elsewhere (accelerators decode with the scanned
    layers, which multiply x @ W)."""
    if layout not in PROJECTION_LAYOUTS:
        raise ValueError(f"unknown projection layout {layout!r}; use one of {PROJECTION_LAYOUTS}")
    if layout != "auto":
        return layout
    return "columns" if jax.default_backend() == "cpu" and cpu_vendor() == "GenuineIntel" else "rows"


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo (GenuineIntel, AuthenticAMD), or "" where
    there is none to read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
