"""One tensor at a time from (possibly multi-process, sharded) device arrays to host memory.

The export never gathers the whole model: each parameter, and each layer of a stacked
parameter, is brought to the host on its own and written before the next is fetched. With
several processes an array is not fully addressable by any one of them, so fetching it is
a collective: every process must call `host_array` on the same arrays in the same order
(process 0 writes, the others drain the same iteration; `exporting_process`).
"""

from __future__ import annotations

import jax
import numpy as np

from ..parallel import host_get


def host_array(x) -> np.ndarray:
    """The whole value of `x` as a numpy array on this host."""
    return np.asarray(host_get(x))


def exporting_process() -> bool:
    """Whether this process writes exports (process 0); the others only join the fetches."""
    return jax.process_index() == 0
