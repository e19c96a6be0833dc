"""A set's generation run beside its scoring, on a second thread.

On a 2-core CPU a decoding step spends about a third of its time in attention that XLA
runs on one core, so scoring's products fill the other: the TOFU benchmark's 20 rows
took 21.0-22.6 s warm this way against 22.9-23.8 s one phase after the other, with the
same numbers (docs/benchmarks.md). On accelerators and in multi-process launches the
phases stay in order: there two programs at once would contend for device memory, and
every process of a launch must start its programs in the same order."""

from __future__ import annotations

import threading
from typing import Callable

import jax

from ..errors import ConfigError


def overlaps_generation(setting: bool | None, mesh) -> bool:
    """Whether generation runs beside scoring: `setting`, or (None) on for a
    single-process CPU evaluation whose model is on one device. True is refused in a
    multi-process launch, whose processes could start the two programs in different orders
    and wait on each other's collectives for ever."""
    if setting and jax.process_count() > 1:
        raise ConfigError(
            f"eval.overlap_generation=true in a launch of {jax.process_count()} processes: every process must "
            "start its programs in the same order, which two threads do not promise; set it to null or false"
        )
    if setting is not None:
        return setting
    return jax.process_count() == 1 and jax.default_backend() == "cpu" and mesh is None


def start_generation(overlap: bool, generate: Callable, *args, **kwargs) -> Callable[[], object]:
    """Start `generate(*args, **kwargs)` and return a function that waits for its result
    (and re-raises its error). With `overlap` it runs now on a worker thread, under the
    caller's matmul precision (a thread-local jax setting the worker would not see);
    without, it runs when the result is first asked for, so the caller's order holds."""
    if not overlap:
        done = []

        def later():
            if not done:
                done.append(generate(*args, **kwargs))
            return done[0]

        return later
    precision = jax.config.jax_default_matmul_precision
    outcome: dict = {}

    def work():
        try:
            with jax.default_matmul_precision(precision):
                outcome["result"] = generate(*args, **kwargs)
        except BaseException as error:  # handed to the caller, who waits for it
            outcome["error"] = error

    thread = threading.Thread(target=work, name="jaxunlearn-generation")
    thread.start()

    def wait():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return wait
