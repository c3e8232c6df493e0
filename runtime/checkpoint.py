"""Orbax checkpoints of the train state and the Grain iterator, written atomically.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-write leaves the previous checkpoint as the latest one. We never hand-roll that.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

import data
from runtime.errors import UsageError

STATE, DATA = "state", "data_iterator"


def make_manager(workdir: str, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=options,
        item_names=(STATE, DATA),
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator: Any) -> None:
    manager.save(
        step,
        args=ocp.args.Composite(
            **{
                STATE: ocp.args.StandardSave(state),
                DATA: data.iterator_checkpoint_args(iterator, restore=False),
            }
        ),
        force=True,
    )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: Any, iterator: Any
) -> tuple[int, Any] | None:
    """(step, state) from the newest complete checkpoint, or None; restores `iterator` in place."""
    step = manager.latest_step()
    if step is None:
        return None
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardRestore(abstract_state),
                    DATA: data.iterator_checkpoint_args(iterator, restore=True),
                }
            ),
        )
    except KeyError as e:
        # Grain's set_state reading a DataLoader's saved state: it has no 'next_index'. Any other
        # KeyError (say, a checkpoint missing its data_iterator item) is not this and propagates.
        if e.args != ("next_index",):
            raise
        raise UsageError(
            f"the checkpoint at step {step} in {manager.directory} holds a data-iterator state "
            f"this version cannot read (no {e}): it was written by another input pipeline (runs "
            "checkpointed before commit 4010e17 read data with Grain's DataLoader). Resume it "
            "with the commit its manifest records, or start a new --workdir"
        ) from e
    return step, restored[STATE]


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, so restored arrays are born sharded."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
