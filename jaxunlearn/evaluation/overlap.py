"""Generation run beside scoring, on a second thread (a TOFU set's answers beside its
candidates, MUSE's continuations and answers beside its memorization and PrivLeak texts).

On a 2-core CPU a decoding step spends about a third of its time in attention that XLA
runs on one core, so scoring's products fill the other: the TOFU benchmark's 20 rows
took 21.0-22.6 s warm this way against 22.9-23.8 s one phase after the other, with the
same numbers (docs/benchmarks.md). On accelerators and in multi-process launches the
phases stay in order: there two programs at once would contend for device memory, and
every process of a launch must start its programs in the same order."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, TypeVar

import jax

from ..errors import ConfigError
from .generation import on_one_cpu

T = TypeVar("T")


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
    return jax.process_count() == 1 and on_one_cpu(mesh)


class GenerationStopped(Exception):
    """Raised in the generation thread, between batches, once its caller has stopped waiting."""


class StopBetweenBatches:
    """A progress bar (or None) for `generate_texts` that ends the generation at its next
    batch once `stop` is set (the batch in flight, a compiled loop, runs to its end)."""

    def __init__(self, bar, stop: threading.Event):
        self.bar, self.stop = bar, stop

    def update(self, n: int) -> None:
        if self.stop.is_set():
            raise GenerationStopped("the evaluation stopped waiting for these answers")
        if self.bar is not None:
            self.bar.update(n)


@contextlib.contextmanager
def generation_beside(overlap: bool, generate: Callable[[threading.Event], T]) -> Iterator[Callable[[], T]]:
    """Yields a function that waits for `generate(stop)`'s result (and re-raises its error).

    With `overlap` the generation starts now on a worker thread, under the caller's matmul
    precision (a thread-local jax setting the worker would not see), while the caller goes
    on (scoring); without, it runs when the result is first asked for, so the caller's
    order holds. Leaving the block sets `stop` and waits for the thread: if the block
    failed (an error, Ctrl-C), a `generate` that checks `stop` between batches (see
    `StopBetweenBatches`) ends after the batch in flight instead of running on."""
    stop = threading.Event()
    outcome: dict = {}

    def work():
        try:
            with jax.default_matmul_precision(precision):
                outcome["result"] = generate(stop)
        except BaseException as error:  # handed to the caller when it asks for the result
            outcome["error"] = error

    def result():
        if overlap:
            thread.join()
        elif not outcome:
            work()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    precision = jax.config.jax_default_matmul_precision
    thread = threading.Thread(target=work, name="jaxunlearn-generation") if overlap else None
    if overlap:
        thread.start()
    try:
        yield result
    finally:
        stop.set()
        if overlap:
            thread.join()
