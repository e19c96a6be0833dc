"""Orbax checkpoints of the whole train state plus the data position (for `--resume`)."""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Async CheckpointManager keeping the last N; saves every k steps and at the end."""

    def __init__(self, directory: Path, keep: int = 2, every: int | None = None):
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    @staticmethod
    def _flat(state) -> dict:
        # Leaves by position: the state's structure is rebuilt from the live run on restore.
        return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(state))}

    def should_save(self, step: int, last: bool) -> bool:
        return last or (self.every is not None and step % self.every == 0)

    def save(self, step: int, state, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(self._flat(state)), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
