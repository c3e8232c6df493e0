"""Orbax checkpoints of the train state and the Grain iterator, written atomically and sealed.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-write leaves the previous checkpoint as the latest one. We never hand-roll that. What
Orbax does not do is notice a checkpoint whose bytes changed after it was written (a bad disk, a
partial copy, a stray write): it restores it, and the run goes on from garbage. So once Orbax has
finalised a step, process 0 seals it with the sha256 of every file in it (`checkpoint_seal`), and
a restore takes the newest checkpoint whose seal holds and that loads; newer ones that do not are
moved aside into `checkpoints_rejected/` (never deleted) with a one-line warning. Rotation keeps
the newest `max_to_keep` sealed checkpoints and never deletes a sealed one newer than those.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

import data
from runtime import checkpoint_seal as seal
from runtime.errors import UsageError

STATE, DATA = "state", "data_iterator"
CHECKPOINT_DIR = "checkpoints"
REJECTED_DIR = "checkpoints_rejected"  # beside it: checkpoints that failed, kept for inspection


class Checkpoints:
    """A run's checkpoints: save, seal, rotate, and restore the newest one that verifies."""

    def __init__(self, workdir: str, max_to_keep: int, async_save: bool):
        self.workdir = workdir
        self.max_to_keep = max_to_keep
        # Orbax keeps every step: rotation is ours, because it must count sealed steps only.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
            options=options,
            item_names=(STATE, DATA),
        )
        self._unsealed: list[int] = []  # saved by this run, not yet sealed
        # Every process keeps the same list, so that all of them rotate alike (Orbax's delete is
        # collective); only process 0 writes the seals.
        self._sealed = [s for s in self.manager.all_steps() if seal.has_seal(self.step_dir(s))]

    @property
    def directory(self) -> str:
        return str(self.manager.directory)

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def latest_step(self) -> int | None:
        """The newest checkpoint this run has (those still being written are sealed at close)."""
        return max([*self._sealed, *self._unsealed], default=None)

    def save(self, step: int, state: Any, iterator: Any) -> None:
        save_together([self], step, [state], [iterator])

    def _start_save(self, step: int, state: Any, iterator: Any) -> None:
        """Starts Orbax's save of `step` (asynchronous with checkpoint.async_save)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardSave(state),
                    DATA: data.iterator_checkpoint_args(iterator, restore=False),
                }
            ),
            force=True,
        )
        self._unsealed.append(step)

    def seal_finished(self, wait: bool = False) -> None:
        """Seals the steps this run saved once Orbax has finalised them; cheap when there are
        none. Called after every step, so a checkpoint is sealed soon after it is written; with
        `wait` (before the next save, at close) it waits for the save first."""
        if not self._unsealed:
            return
        if wait:
            self.manager.wait_until_finished()
        elif self.manager.is_saving_in_progress():
            return
        for step in self._unsealed:
            if jax.process_index() == 0:
                seal.write_seal(self.step_dir(step))
            self._sealed.append(step)
        self._unsealed.clear()

    def close(self) -> None:
        """Waits for the last save, seals it and rotates; then releases Orbax's threads."""
        close_together([self])

    def _rotate(self) -> None:
        """Keeps the newest `max_to_keep` sealed checkpoints and anything newer than the oldest
        of them; deletes the rest."""
        if not self._sealed:
            return
        kept = sorted(self._sealed)[-self.max_to_keep :]
        for step in self.manager.all_steps():
            if step < kept[0]:
                self.manager.delete(step)
        self._sealed = kept

    def restore_latest(self, abstract_state: Any, iterator: Any) -> tuple[int, Any] | None:
        """(step, state) from the newest checkpoint that verifies and loads, or None when there
        is none at all; restores `iterator` in place. Newer ones that fail are moved aside with a
        warning; when checkpoints exist but none verifies, a UsageError names what was wrong."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        # Where nothing is sealed the checkpoints predate seals, or the run was killed before its
        # first seal: they load unverified.
        legacy = not self._sealed
        rejected: list[tuple[int, str]] = []
        for step in steps:
            problem = None if legacy else seal.check_seal(self.step_dir(step))
            if problem is None:
                try:
                    state = self._restore(step, abstract_state, iterator)
                except UsageError:
                    raise
                except Exception as e:  # an unreadable checkpoint, whatever Orbax raises
                    problem = f"does not load ({type(e).__name__}: {first_line(e)})"
            if problem is None:
                if legacy:
                    warn(f"checkpoint step {step} has no seal, nor has any other: unverified")
                self._set_aside(rejected)
                return step, state
            rejected.append((step, problem))
        listed = "; ".join(f"step {s} {why}" for s, why in rejected)
        raise UsageError(
            f"no checkpoint in {self.directory} verifies ({listed}); nothing was changed: "
            "inspect them, or start a new --workdir"
        )

    def restore_step(self, step: int, abstract_state: Any, iterator: Any) -> Any:
        """The state of checkpoint `step`, which must exist and verify (UsageError otherwise,
        naming the steps there are); restores `iterator` in place. Nothing is moved aside."""
        steps = sorted(self.manager.all_steps())
        if step not in steps:
            have = ", ".join(map(str, steps)) or "none"
            raise UsageError(f"no checkpoint at step {step} in {self.directory} (steps: {have})")
        problem = seal.check_seal(self.step_dir(step)) if self._sealed else None
        if problem is not None:
            raise UsageError(f"checkpoint step {step} in {self.directory} {problem}")
        if not self._sealed:
            warn(f"checkpoint step {step} has no seal, nor has any other: unverified")
        return self._restore(step, abstract_state, iterator)

    def set_aside_newer_than(self, step: int, why: str) -> None:
        """Moves this run's checkpoints newer than `step` aside (see `restore_together`)."""
        self._set_aside([(s, why) for s in self.manager.all_steps() if s > step])

    def _restore(self, step: int, abstract_state: Any, iterator: Any) -> Any:
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.StandardRestore(abstract_state),
                        DATA: data.iterator_checkpoint_args(iterator, restore=True),
                    }
                ),
            )
        except KeyError as e:
            # Grain's set_state reading a DataLoader's saved state: it has no 'next_index'. Any
            # other KeyError (say, a checkpoint missing its data_iterator item) is not this.
            if e.args != ("next_index",):
                raise
            raise UsageError(
                f"the checkpoint at step {step} in {self.directory} holds a data-iterator state "
                f"this version cannot read (no {e}): it was written by another input pipeline "
                "(runs checkpointed before commit 4010e17 read data with Grain's DataLoader). "
                "Resume it with the commit its manifest records, or start a new --workdir"
            ) from e
        return restored[STATE]

    def _set_aside(self, rejected: list[tuple[int, str]]) -> None:
        """Moves checkpoints that failed out of Orbax's directory, each with a warning."""
        if not rejected:
            return
        if jax.process_index() == 0:
            aside = os.path.join(self.workdir, REJECTED_DIR)
            os.makedirs(aside, exist_ok=True)
            for step, problem in rejected:
                target = unused_path(os.path.join(aside, str(step)))
                os.rename(self.step_dir(step), target)
                warn(f"checkpoint step {step} {problem}: moved aside to {target}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("archlab_checkpoints_set_aside")
        gone = {step for step, _ in rejected}
        self._sealed = [step for step in self._sealed if step not in gone]
        self.manager.reload()


# ------------------------------------------------------------ runs trained together (a group)
# The runs of a group (runtime/group.py) checkpoint the same steps, each in its own directory.
# Whenever the process is killed, they must still share a sealed step to resume from: so no run
# deletes an old checkpoint (rotation) before every run has sealed a newer one.


def save_together(
    runs: Sequence[Checkpoints], step: int, states: Sequence[Any], iterators: Sequence[Any]
) -> None:
    """Saves `step` of every run: first each run's previous save is waited for and sealed, then
    each rotates, then each starts its save."""
    for run in runs:
        run.seal_finished(wait=True)
    for run in runs:
        run._rotate()
    for run, state, iterator in zip(runs, states, iterators, strict=True):
        run._start_save(step, state, iterator)


def close_together(runs: Sequence[Checkpoints]) -> None:
    """Waits for every run's last save and seals it, then rotates each, then releases Orbax's
    threads (also when sealing fails)."""
    try:
        for run in runs:
            run.seal_finished(wait=True)
        for run in runs:
            run._rotate()
    finally:
        for run in runs:
            run.manager.close()


def restore_together(
    runs: Sequence[Checkpoints], abstract_state: Any, iterators: Sequence[Any]
) -> tuple[int, list[Any]] | None:
    """(step, each run's state) at the newest step every run has a checkpoint of that verifies,
    or None when they share none (they start afresh); each iterator is restored in place (or
    left at its start). Each run first restores as a lone run does (`restore_latest`: spoilt
    checkpoints are moved aside); a run that is then ahead of the others (killed while the
    group's runs were sealing one step) has its newer checkpoints moved aside too, with a
    warning: the group retrains those steps, bitwise as before."""
    starts = [iterator.get_state() for iterator in iterators]
    restored = [
        run.restore_latest(abstract_state, it) for run, it in zip(runs, iterators, strict=True)
    ]
    steps = [
        set(run.manager.all_steps()) if got else set()
        for run, got in zip(runs, restored, strict=True)
    ]
    # None, not 0, when they share none: step 0 is a real checkpoint (a converted run's).
    shared = max(set.intersection(*steps), default=None)
    states = []
    for run, iterator, start, got in zip(runs, iterators, starts, restored, strict=True):
        if got is None or got[0] == shared:
            states.append(got[1] if got else None)
            continue
        if shared is None:
            run.set_aside_newer_than(-1, "is a step that not every run of its group has")
            iterator.set_state(start)
            states.append(None)
            continue
        run.set_aside_newer_than(
            shared, f"is newer than step {shared}, the newest that every run of its group has"
        )
        states.append(run.restore_step(shared, abstract_state, iterator))
    return None if shared is None else (shared, states)


def has_checkpoints(workdir: str) -> bool:
    """Whether the run has any step directory, without creating anything."""
    return bool(checkpoint_steps(workdir))


def checkpoint_steps(workdir: str) -> list[int]:
    """The run's finalised checkpoint steps, newest first (Orbax writes a step under a temporary
    name and renames it when complete, so a step-named directory is whole), read only."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    return sorted((int(name) for name in os.listdir(directory) if name.isdigit()), reverse=True)


def verified_checkpoint(workdir: str, step: int | None = None) -> tuple[int, str]:
    """(step, fingerprint) of the run's newest checkpoint whose seal holds, or of checkpoint
    `step`, for another run to read: nothing in this run is written, moved or deleted (unlike
    `Checkpoints.restore_latest`, which tidies its own run). The fingerprint is
    `checkpoint_seal.fingerprint`'s. Newer checkpoints that do not verify are skipped with a
    warning; where no checkpoint has a seal (they predate seals) the newest is taken, with a
    warning. UsageError when there is no checkpoint, none verifies, or `step` is not there."""
    steps = checkpoint_steps(workdir)
    if not steps:
        raise UsageError(f"run {workdir!r} has no checkpoint")
    if step is not None and step not in steps:
        have = ", ".join(map(str, sorted(steps)))
        raise UsageError(f"run {workdir!r} has no checkpoint at step {step} (steps: {have})")
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    legacy = not any(seal.has_seal(os.path.join(directory, str(s))) for s in steps)
    skipped: list[str] = []
    for candidate in steps if step is None else [step]:
        step_dir = os.path.join(directory, str(candidate))
        problem = None if legacy else seal.check_seal(step_dir)
        if problem is None:
            for why in skipped:
                warn(f"{why}: skipped")
            if legacy:
                warn(f"checkpoint step {candidate} of {workdir} has no seal, nor has any other")
            return candidate, seal.fingerprint(step_dir)
        skipped.append(f"checkpoint step {candidate} of {workdir} {problem}")
    raise UsageError(f"no checkpoint verifies: {'; '.join(skipped)}")


def verify_pinned(workdir: str, step: int, fingerprint: str) -> None:
    """Checkpoint `step` of another run, pinned by this one (its manifest records `fingerprint`),
    is still there, verifies, and is the checkpoint it was; UsageError otherwise."""
    _, now = verified_checkpoint(workdir, step)
    if now != fingerprint:
        raise UsageError(
            f"checkpoint step {step} of run {workdir!r} is not the one pinned (its fingerprint "
            f"was {fingerprint[:12]}, now {now[:12]})"
        )


def restore_params(workdir: str, step: int, abstract_params: Any) -> Any:
    """Only the parameters of checkpoint `step`'s state, born with `abstract_params`' shardings;
    its optimizer state and data iterator are not read, and nothing is written."""
    path = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR, str(step), STATE))
    item = {"params": abstract_params}
    args = ocp.args.PyTreeRestore(
        item=item,
        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True,
    )
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
            return checkpointer.restore(path, args=args)["params"]
    except Exception as e:  # whatever Orbax raises for parameters that are not these
        raise UsageError(
            f"the parameters of checkpoint step {step} of {workdir} do not load "
            f"({type(e).__name__}: {first_line(e)})"
        ) from e


def unused_path(path: str) -> str:
    """`path`, or `path.1`, `path.2`, ...: the first that does not exist."""
    candidate, n = path, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def warn(message: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def abstract_like(state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, so restored arrays are born sharded."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
