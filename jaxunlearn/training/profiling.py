"""A jax.profiler trace of a window of training steps (`train.profile_steps=N..M`), for
TensorBoard's profile plugin or XProf: the steps' device operations, compiled kernels and
host gaps, without the compilation of the first step unless the window starts there."""

from __future__ import annotations

from pathlib import Path

import jax

from .config import parse_window


class StepProfiler:
    """Starts a trace before step N and stops it after step M (once the step's results are
    on the host), writing under `directory`; `close` stops a trace that a shorter or
    interrupted run left open. Only process 0 traces."""

    def __init__(self, window: str | None, directory: Path):
        self.window = parse_window(window)
        self.directory = Path(directory)
        self.active = self.done = False

    def before(self, step: int) -> None:
        # a resumed run that starts inside the window traces the rest of it
        due = self.window and self.window[0] <= step <= self.window[1] and not (self.active or self.done)
        if due and jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, outputs) -> None:
        if self.active and step >= self.window[1]:
            jax.block_until_ready(outputs)
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.done = False, True
