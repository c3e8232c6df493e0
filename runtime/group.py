"""Runs of one experiment that differ only in their seed, trained together: one process, one
compilation (`launch.train --seeds`).

Each run stays whole on its own: its run directory, config (with its seed), initialisation,
dropout keys, data order, checkpoints, metrics and manifest are the ones it has when trained
alone. What the runs share is what costs time without depending on the seed: the process's
start, the dataset, the mesh and model, and the compilation of each step; and what every run
reads and none trains: a LoRA base, a distillation teacher, a fine-tuning source, pruning's
schedule (`assembly.for_seed`). A profile is refused (`why_alone`): its trace is one run's.

The group's state is its runs' states, and its step dispatches the lone run's own compiled step
once per run: every run computes with the very program it runs alone, so its metrics,
checkpoints and evaluations are bitwise those of the run trained alone, whatever the model
(`tests/test_seed_groups.py`), and `launch.reproduce` reruns it alone to the same bytes. One
program for all the runs (`lax.map` of the lone step over stacked states, or `jax.vmap`) was
measured and is not bitwise: XLA compiles the step inside it anew and sums in another order
(deltanet differs from its second step; benchmarks/seed_groups.md has the speeds too).

A lone run is a group of one, so `runtime.loop` has one path for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import ml_collections

from runtime import assembly, checkpoint, finetune, manifest, teacher
from runtime import mesh as mesh_lib
from runtime.assembly import Experiment
from runtime.errors import UsageError
from runtime.step import TrainState


@dataclasses.dataclass(frozen=True)
class Group:
    # Each run's own experiment: its config (its seed), data iterator and fresh state; the rest
    # (mesh, model, data, jitted steps) is the first run's, shared.
    runs: list[Experiment]
    together: bool  # trained with --seeds (messages name each run by its seed)

    @property
    def exp(self) -> Experiment:
        """What the runs share: the loop's schedule (train, eval and checkpoint intervals), the
        mesh, model, data, the jitted steps and the step's read-only arguments."""
        return self.runs[0]

    def label(self, index: int) -> str:
        """How messages name a run of the group ('' alone)."""
        return f"seed {self.runs[index].config.seed}: " if self.together else ""

    def next_batch(self) -> list[dict[str, jax.Array]]:
        """The next training batch of every run, each from its own data iterator, placed."""
        return [
            mesh_lib.put_batch(next(run.train_iter), self.exp.batch_sharding) for run in self.runs
        ]

    def train_step(
        self, states: list[TrainState], batches: list[dict[str, jax.Array]]
    ) -> tuple[list[TrainState], list[dict[str, jax.Array]]]:
        """One step of every run: the lone run's own compiled step, dispatched once per run
        (each donates its state). Dispatch is asynchronous, so the runs' steps queue up
        without waiting for each other."""
        extras = self.exp.step_extras
        outputs = [
            self.exp.train_step(state, batch, *extras)
            for state, batch in zip(states, batches, strict=True)
        ]
        return [state for state, _ in outputs], [metrics for _, metrics in outputs]


def alone(exp: Experiment) -> Group:
    """A lone run as a group of one."""
    return Group(runs=[exp], together=False)


def of_seeds(exp: Experiment, seeds: Sequence[int]) -> Group:
    """`exp`'s config at each of `seeds`, trained together (`exp`'s own seed is not used)."""
    return Group(runs=[assembly.for_seed(exp, seed) for seed in seeds], together=True)


def why_alone(config: ml_collections.ConfigDict) -> str | None:
    """Why runs of `config` cannot train as a group, or None when they can. A group's runs share
    the jitted steps, LoRA's base, a distillation teacher, a fine-tuning source and pruning's
    schedule (`assembly.for_seed`); what it cannot share is a trace of one run's steps."""
    if config.profile.start_step:
        return "profile.* traces the steps of one run: profile a lone run (without --seeds)"
    return None


def check_config(config: ml_collections.ConfigDict) -> None:
    """UsageError (one line, before anything runs) for a config a group cannot train."""
    if reason := why_alone(config):
        raise UsageError(f"--seeds: {reason}")


def pinning_workdir(workdirs: Sequence[str]) -> str:
    """The run directory whose manifest says which checkpoints of a distillation teacher and of
    a fine-tuning source the runs read (`assembly.build`'s `workdir`): a run started earlier
    pinned them, and the group's new runs read the same ones. Runs that pinned different ones
    (started apart) cannot share them: a UsageError."""
    pins = [(teacher.recorded(manifest.read(w)), finetune.pinned(w)) for w in workdirs]
    pinned = [(w, pin) for w, pin in zip(workdirs, pins, strict=True) if pin != (None, None)]
    if not pinned:
        return workdirs[0]
    first, pin = pinned[0]
    for other, other_pin in pinned[1:]:
        if other_pin != pin:
            raise UsageError(
                f"--seeds: {first} and {other} read different teacher or fine-tuning "
                "checkpoints (pinned when each started): train them apart"
            )
    return first


def initial_state(
    group: Group, checkpoints: Sequence[checkpoint.Checkpoints]
) -> tuple[int, list[TrainState], bool]:
    """(start step, each run's state, restored?): every run at the newest step all of them have
    a checkpoint of that verifies (`checkpoint.restore_together`), with its data iterator where
    it was; or every run's starting state (a fresh init, or a fine-tuning source's parameters).
    A lone run is as `assembly.initial_state` has it."""
    exp = group.exp
    with exp.context():
        restored = checkpoint.restore_together(
            checkpoints, exp.abstract_state, [run.train_iter for run in group.runs]
        )
        if restored is None:
            start, states = 0, [assembly.starting_state(run) for run in group.runs]
        else:
            start, states = restored
        return start, states, restored is not None
