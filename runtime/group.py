"""Runs of one experiment that differ only in their seed, trained together: one process, one
program (`launch.train --seeds`).

Each run stays whole on its own: its run directory, config (with its seed), initialisation,
dropout keys, data order, checkpoints, metrics and manifest are the ones it has when trained
alone. What the runs share is what costs time without depending on the seed: the process's
start, the dataset, the mesh and model, and the compilation of each step.

The group's state is its runs' states stacked on a leading axis, and so is each batch. Its
train step maps the lone run's own jitted step over that axis with `lax.map`: one compiled
program that steps the runs one after another, each computing exactly what it computes alone,
so every run's metrics and parameters are bitwise those of the same run trained alone (on CPU;
`tests/test_seed_groups.py`). `jax.vmap` would batch the runs' matmuls instead, which XLA sums in
another order: not bitwise, and measured no faster on CPU (experiments/mqar_mixers.md).

A lone run is a group of one: its state is not stacked and its step is the lone step, so
`runtime.loop` has one path for both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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
    # jitted: (state, batch, *step_extras) -> (state, metrics); stacked on a leading axis, one
    # entry per run, when `stacked`; donates the state.
    train_step: Callable
    batch_sharding: NamedSharding
    stack: Callable[[list[TrainState]], TrainState]  # the runs' states -> the group's state
    stacked: bool

    @property
    def exp(self) -> Experiment:
        """What the runs share: the loop's schedule (train, eval and checkpoint intervals), the
        mesh, model, data and eval step."""
        return self.runs[0]

    def label(self, index: int) -> str:
        """How messages name a run of the group ('' alone)."""
        return f"seed {self.runs[index].config.seed}: " if self.stacked else ""

    def next_batch(self) -> dict[str, jax.Array]:
        """The next training batch of every run, each from its own data iterator."""
        batches = [next(run.train_iter) for run in self.runs]
        if self.stacked:
            batch = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        else:
            (batch,) = batches
        return mesh_lib.put_batch(batch, self.batch_sharding)

    def split(self, tree: Any) -> list[Any]:
        """A stacked tree (state, metrics; on device or host) as one tree per run."""
        if not self.stacked:
            return [tree]
        return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(len(self.runs))]


def alone(exp: Experiment) -> Group:
    """A lone run as a group of one."""
    return Group(
        runs=[exp],
        train_step=exp.train_step,
        batch_sharding=exp.batch_sharding,
        stack=lambda states: states[0],
        stacked=False,
    )


def of_seeds(exp: Experiment, seeds: Sequence[int]) -> Group:
    """`exp`'s config at each of `seeds`, trained together (`exp`'s own seed is not used)."""
    state_shardings = jax.tree.map(stacked, exp.state_shardings)
    batch_sharding = stacked(exp.batch_sharding)

    def step(state: TrainState, batch: dict, *extras: Any) -> tuple:
        return jax.lax.map(lambda run: exp.train_step(*run, *extras), (state, batch))

    # The arguments arrive placed (the state by `stack` and the step, the batch by
    # `next_batch`, the step's extras by assembly), so only the outputs' shardings are named.
    train_step = jax.jit(
        step,
        out_shardings=(state_shardings, NamedSharding(exp.mesh, P())),
        donate_argnums=0,
    )
    stack = jax.jit(
        lambda states: jax.tree.map(lambda *xs: jnp.stack(xs), *states),
        out_shardings=state_shardings,
    )
    return Group(
        runs=[assembly.for_seed(exp, seed) for seed in seeds],
        train_step=train_step,
        batch_sharding=batch_sharding,
        stack=stack,
        stacked=True,
    )


def stacked(sharding: NamedSharding) -> NamedSharding:
    """The sharding of a stack of arrays sharded as `sharding`: the runs' axis unsharded."""
    return NamedSharding(sharding.mesh, P(None, *sharding.spec))


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
) -> tuple[int, TrainState, bool]:
    """(start step, the group's state, restored?): every run at the newest step all of them have
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
        return start, group.stack(states), restored is not None
