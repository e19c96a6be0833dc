"""Orbax checkpoints of the whole train state plus the data position (for `--resume`)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from ..errors import CheckpointError
from ..storage import home

log = logging.getLogger(__name__)


class Checkpointer:
    """Async CheckpointManager keeping the last N; saves every k steps, every m minutes
    (whichever comes first) and at the end (unless `final` is off: output.final_checkpoint).
    Temporary directories of a killed save are removed when it opens."""

    def __init__(
        self,
        directory: Path,
        keep: int = 2,
        every: int | None = None,
        minutes: float | None = None,
        final: bool = True,
    ):
        self.every = every
        self.final = final
        self.minutes = minutes
        # the URL's checkpoints/ when the run is staged (storage.py), else the folder itself
        self.directory = home(Path(directory).absolute())
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.last_save_time = time.monotonic()

    @staticmethod
    def _flat(state) -> dict:
        # Leaves by position: the state's structure is rebuilt from the live run on restore.
        return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(state))}

    def time_due(self) -> bool:
        return self.minutes is not None and time.monotonic() - self.last_save_time >= 60 * self.minutes

    def should_save(self, step: int, last: bool) -> bool:
        return (last and self.final) or (self.every is not None and step % self.every == 0)

    def save(self, step: int, state, meta: dict) -> None:
        if self.manager.latest_step() == step:
            return
        with self._writing(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(self._flat(state)), meta=ocp.args.JsonSave(meta)),
                force=True,
            )
        self.last_save_time = time.monotonic()

    @contextlib.contextmanager
    def _writing(self, step: int | None):
        """A save that fails (full disk, read-only directory) is one clear error."""
        try:
            yield
        except Exception as e:
            what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
            raise CheckpointError(
                f"could not write {what} to {self.directory} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "free disk space or set output.dir elsewhere. --resume continues from the last checkpoint written"
            ) from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, state_like, step: int | None = None):
        """(state, meta) of `step` (default latest), placed like `state_like`'s arrays."""
        step = self.latest_step() if step is None else step
        leaves, treedef = jax.tree.flatten(state_like)
        abstract = {
            f"{i:05d}": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for i, x in enumerate(leaves)
        }
        out = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        restored = [out["state"][f"{i:05d}"] for i in range(len(leaves))]
        return jax.tree.unflatten(treedef, restored), out["meta"]

    def restore_latest_readable(self, state_like):
        """(state, meta) of the newest checkpoint that reads. Unreadable newer ones (a save
        cut short, a damaged file) are moved aside as `corrupt-<step>` with a message, so
        later saves of those steps do not collide. When none reads, nothing is moved (the
        cause is then more likely the run than the files) and the first error is raised."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        failures = []
        for step in steps:
            try:
                restored = self.restore(state_like, step)
            except Exception as e:  # orbax / tensorstore raise ValueError, KeyError, JSON errors...
                failures.append((step, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
                continue
            for bad, why in failures:
                self._move_aside(bad)
                log.warning(
                    "checkpoint of step %d is unreadable (%s); moved aside, resuming from step %d", bad, why, step
                )
            return restored
        first = failures[0][1] if failures else "none saved"
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be read ({first}); if the model or settings changed since "
            "the run started, resume with the original ones, else start afresh with --overwrite"
        )

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = self.directory / str(step)
            if src.exists():
                src.rename(self.directory / f"corrupt-{step}-{int(time.time())}")
        self.manager.reload()

    def wait(self) -> None:
        with self._writing(None):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()
