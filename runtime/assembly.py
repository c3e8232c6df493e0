"""What a config becomes before training: the pieces `launch.train` assembles and
`launch.benchmark` times, and the state the loop (`runtime.loop`) starts from.

The story, in order: checks -> mesh -> the data's shapes -> model, objective and optimizer ->
sharded state specs, checked against the mesh -> a fine-tuning source (with LoRA, its parameters
as the frozen base) -> a distillation teacher's parameters -> data -> jitted steps (`build`);
then a fresh, fine-tuning or restored state (`initial_state`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import operator
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import data
import models
import objectives
from runtime import checkpoint, finetune, lora, manifest, metric_writers, profiling, quantization
from runtime import mesh as mesh_lib
from runtime import optimizer as optimizer_lib
from runtime import privacy as privacy_lib
from runtime import pruning as pruning_lib
from runtime import teacher as teacher_lib
from runtime.errors import UsageError
from runtime.step import (
    MODEL_INPUT,
    ReadOnly,
    TrainState,
    init_state,
    make_eval_step,
    make_train_step,
    train_state,
)
from runtime.workdir import run_config

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_names(config: ml_collections.ConfigDict) -> None:
    """Every component the config names exists (raises UnknownNameError listing the valid ones)."""
    models.MODELS.get(config.model.name)
    data.DATASETS.get(config.data.name)
    objectives.OBJECTIVES.get(config.objective.name)
    optimizer_lib.OPTIMIZERS.get(config.optimizer.name)
    optimizer_lib.SCHEDULES.get(config.optimizer.schedule)
    if config.train.compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(
            f"unknown train.compute_dtype {config.train.compute_dtype!r}; "
            f"valid: {', '.join(COMPUTE_DTYPES)}"
        )
    for key in (
        "train.steps",
        "train.batch_size",
        "eval.batch_size",
        "train.log_every",
        "eval.every",
        "checkpoint.every",
        "train.grad_accum_steps",
        "eval.generation.prompts",
        "eval.generation.prompt_tokens",
        "eval.generation.new_tokens",
    ):
        value = functools.reduce(operator.getitem, key.split("."), config)
        if value < 1:
            raise UsageError(f"{key} must be >= 1, got {value}")
    privacy_lib.check_config(config)
    pruning_lib.check_config(config)
    metric_writers.check(config.tracking)
    teacher_lib.check_config(config)
    lora.check_config(config)
    profiling.check(config)
    quantization.check(config.quant)


def check(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
    """Everything about a config that needs neither devices nor data: its names and numbers, the
    dataset's parameters, the model and objective against the shapes the data will have, LoRA's
    targets, and a new fine-tuning run's source against the model (`workdir`: the run's; one
    that has pinned its source checked it then, and needs it no more unless it is LoRA's base)."""
    check_names(config)
    model, _ = model_and_objective(config, data_shapes(config))
    if not config.finetune.from_run:
        return
    ours = abstract_params(model)
    if lora.enabled(config):
        lora.find_targets(config.lora.targets, ours)
    if workdir is None or finetune.pinned(workdir) is None:
        source = finetune.source_config(config)
        source_model, _ = model_and_objective(source, data_shapes(source))
        finetune.check_shapes(
            mesh_lib.unbox(ours),
            mesh_lib.unbox(abstract_params(source_model)),
            finetune.requested(config)[0],
        )


def abstract_params(model: nn.Module) -> Any:
    """The model's parameters as boxed shapes (with their logical axes); nothing computed."""
    return jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), model.example_inputs(1), train=False)["params"]
    )


def data_shapes(config: ml_collections.ConfigDict) -> data.DatasetSpec:
    """The dataset's spec from its parameters alone (its split sizes empty): what the model is
    built from, known before any data is prepared."""
    try:
        return data.shape_spec(
            config.data.name, config.data[config.data.name].to_dict(), config.data.dir or None
        )
    except data.DataConfigError as e:
        raise UsageError(str(e)) from e


def model_and_objective(config: ml_collections.ConfigDict, spec: data.DatasetSpec) -> tuple:
    """The model for data of `spec`'s shapes and the objective; a config that does not fit itself
    or the data is a UsageError."""
    if objectives.needs_teacher(config.objective.name) and spec.kind != "sequence":
        raise UsageError(
            f"objective {config.objective.name!r} distils next-token predictions: "
            f"{spec.name!r} is {spec.kind} data"
        )
    try:
        model = models.build_model(config.model, spec, COMPUTE_DTYPES[config.train.compute_dtype])
        objective = objectives.get_objective(config.objective)
    except ValueError as e:
        raise UsageError(f"{config.model.name!r} with {config.objective.name!r}: {e}") from e
    # The one place quantization enters: every step, suite and generator gets this model.
    return quantization.wrap(model, config.quant), objective


@dataclass
class Experiment:
    """Everything the loop needs, built from a config; nothing written to disk yet."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: tuple
    dataset: data.Dataset
    train_iter: Any  # Grain iterator over this process's shard of each global batch
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: TrainState  # shapes, carrying the target shardings
    state_shardings: TrainState
    batch_sharding: NamedSharding
    # jitted: (state, batch, *step_extras) -> (state, metrics); donates the state
    train_step: Callable
    eval_step: Callable  # jitted: (params, batch) -> metrics
    # (seed) -> a fresh, boxed state. The seed may be traced: the seeds of an arm then compile
    # one program, which a study's persistent compilation cache holds once.
    make_state: Callable[[Any], TrainState]
    privacy: privacy_lib.DpSgdAccounting | None  # with privacy.dp_sgd: the epsilon spent by a step
    pruning: pruning_lib.Pruning | None  # with prune.sparsity > 0: what it prunes and reports
    # The model's parameters, whatever trains: boxed shapes, and their shardings.
    abstract_params: Any
    model_shardings: Any
    finetune_source: finetune.Source | None  # finetune.from_run's checkpoint, resolved
    # LoRA: the state's parameters are adapters; `frozen` is the base (the source's parameters)
    # and `merge` (adapters, base) -> the model's parameters, jitted. None otherwise.
    frozen: Any = None
    merge: Callable[[Any, Any], Any] | None = None
    teacher: teacher_lib.Teacher | None = None  # with a distillation objective

    @property
    def step_extras(self) -> tuple:
        """The train step's arguments after (state, batch): what it reads and never trains."""
        return (ReadOnly(self.frozen, None if self.teacher is None else self.teacher.params),)

    def model_params(self, trained: Any) -> Any:
        """The parameters the model computes with, from a state's: the same, or with LoRA the
        base with the adapters merged in."""
        return trained if self.merge is None else self.merge(trained, self.frozen)

    @property
    def trainable_params(self) -> int:
        return models.count_params(self.abstract_state.params)

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step (examples for non-sequence data)."""
        return self.config.train.batch_size * (self.dataset.spec.seq_len or 1)

    @property
    def model_flops_per_step(self) -> float | None:
        """Analytic FLOPs of one optimizer step: 3 x forward FLOPs per token (the backward pass
        costs twice the forward) x tokens per step; forward FLOPs per token are the model's own
        `describe()`; a teacher's forward pass adds its own. None for a model that does not
        state its FLOPs (the image models)."""
        forward = forward_flops_per_token(self.model)
        if not forward:
            return None
        if self.teacher is None:
            return 3 * forward * self.tokens_per_step
        teacher = forward_flops_per_token(self.teacher.model)
        return (3 * forward + teacher) * self.tokens_per_step if teacher else None

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Mesh and logical-axis rules: what tracing, init and restore run under."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield


def forward_flops_per_token(model: nn.Module) -> float | None:
    return (model.describe() if hasattr(model, "describe") else {}).get("flops_per_token")


def build(
    config: ml_collections.ConfigDict,
    devices: list | None = None,
    *,
    workdir: str | None = None,
    with_teacher: bool = True,
) -> Experiment:
    """Checks the config against the devices (default: all) and data, then builds every piece.
    Raises UsageError for a config that does not fit (batch vs mesh, model vs data, a parameter
    dimension vs the mesh axes it is sharded over, a fine-tuning source or a teacher that does
    not verify), before the data are prepared.

    `workdir`: the run's, whose manifest pins the checkpoints finetune.from_run and a
    distillation teacher are read from (a new run's are chosen now: `runtime.finetune`,
    `load_teacher`). `with_teacher=False` leaves the teacher out, for reading a trained student
    back (evaluate, generate, convert): that Experiment's train step refuses to run."""
    check_names(config)
    mesh = mesh_lib.make_mesh(config, devices)
    mesh_lib.check_batch_size(
        "train.batch_size", config.train.batch_size, mesh, config.train.grad_accum_steps
    )
    mesh_lib.check_batch_size("eval.batch_size", config.eval.batch_size, mesh)

    # The model is built from the data's shapes alone, so a model or sharding that does not fit
    # fails before the data are prepared (minutes for a large dataset).
    spec = data_shapes(config)
    model, objective = model_and_objective(config, spec)
    tx = optimizer_lib.make_optimizer(config)
    pruning = pruning_lib.from_config(config)
    rules = mesh_lib.logical_rules(config)

    # Shapes and logical specs from eval_shape: no parameter is materialised here. With LoRA the
    # state trains adapters of the targets alone.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        model_boxed = abstract_params(model)
    make_state = state_maker(config, model, tx, model_boxed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(make_state, config.seed)
        specs = mesh_lib.param_specs(boxed.params)
        abstract = mesh_lib.unbox(boxed)
        state_specs = TrainState(
            step=P(),
            params=specs,
            rng=P(),
            opt_state=mesh_lib.optimizer_state_specs(
                tx, abstract.opt_state, specs, abstract.params
            ),
        )
    # Parameters first in the state's order, so a parameter is named before its Adam moments.
    mesh_lib.check_divisible(state_specs, abstract, mesh.shape, rules)
    model_specs = mesh_lib.param_specs(model_boxed)
    mesh_lib.check_divisible(model_specs, mesh_lib.unbox(model_boxed), mesh.shape, rules)
    model_shardings = mesh_lib.to_shardings(model_specs, mesh, rules)

    # Fine-tuning: the source's checkpoint. With LoRA its parameters are the frozen base, read
    # now, so that a source changed since it was pinned fails before the data are prepared.
    source = finetune.resolve(config, workdir)
    frozen, merge = None, None
    if lora.enabled(config):
        frozen = finetune.read_params(source, model_boxed, mesh, rules)
        scale = lora.update_scale(config)
        merge = lambda adapters, base: lora.merge(base, adapters, scale)  # noqa: E731

    distilling = objectives.needs_teacher(config.objective.name)
    teacher = None
    if distilling and with_teacher:
        # A resumed student distils from the teacher checkpoint its manifest records.
        recorded = teacher_lib.recorded(manifest.read(workdir)) if workdir else None
        teacher = load_teacher(config, spec, mesh, rules, recorded)
    if pruning is not None:
        pruning.check_params(abstract.params)

    # Data: prepared on first use; every process reads its own shard of each global batch.
    try:
        dataset = data.load(
            config.data.name, config.data[config.data.name].to_dict(), config.data.dir or None
        )
    except data.DataConfigError as e:
        raise UsageError(str(e)) from e
    accounting = privacy_lib.accounting(config, dataset.spec.splits[spec.train_split])
    train_iter = train_iterator(config, dataset)

    input_key = MODEL_INPUT[spec.kind]
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    # What the steps read and never train, as arguments (never donated): LoRA's base, a teacher.
    frozen_shardings = () if merge is None else (model_shardings,)
    read_only_shardings = ReadOnly(
        model_shardings if merge is not None else None, teacher.shardings if teacher else None
    )
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state_shardings = mesh_lib.to_shardings(state_specs, mesh, rules)
        # Jitted steps: explicit shardings in and out; the train step donates the old state.
        train_step = jax.jit(
            make_train_step(
                model,
                tx,
                objective,
                input_key,
                config.train.grad_accum_steps,
                NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES)),
                per_example_grads=config.privacy.dp_sgd,
                merge=merge,
                teacher=teacher.model if teacher else None,
            ),
            in_shardings=(state_shardings, batch_sharding, read_only_shardings),
            out_shardings=(state_shardings, replicated),
            donate_argnums=0,
        )
        if distilling and teacher is None:
            train_step = untaught_step
        # Evaluation scores the hard labels only: it needs no teacher.
        eval_step = jax.jit(
            make_eval_step(
                model, objectives.get_eval_objective(config.objective), input_key, merge
            ),
            in_shardings=(state_shardings.params, batch_sharding, *frozen_shardings),
            out_shardings=replicated,
        )
        merge_step = None
        if merge is not None:
            merge_step = jax.jit(
                merge,
                in_shardings=(state_shardings.params, model_shardings),
                out_shardings=model_shardings,
            )
    return Experiment(
        config=config,
        mesh=mesh,
        rules=rules,
        dataset=dataset,
        train_iter=train_iter,
        model=model,
        tx=tx,
        # Read at every logging step: one compiled program, not one per operation of the formula.
        schedule=jax.jit(optimizer_lib.learning_rate_schedule(config)),
        abstract_state=checkpoint.abstract_like(abstract, state_shardings),
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        train_step=train_step,
        eval_step=with_frozen(eval_step, frozen),
        make_state=make_state,
        privacy=accounting,
        abstract_params=model_boxed,
        model_shardings=model_shardings,
        finetune_source=source,
        frozen=frozen,
        merge=merge_step,
        teacher=teacher,
        pruning=pruning,
    )


def state_maker(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    tx: optax.GradientTransformation,
    model_boxed: Any,
) -> Callable[[Any], TrainState]:
    """(seed) -> a fresh, boxed state (its initialisation and dropout keys come from the seed):
    the model's parameters, or with LoRA adapters of the targets in `model_boxed` (the model's
    abstract parameters) alone. `tx` is the config's optimizer (DP-SGD's noise key is its
    config's seed)."""
    if lora.enabled(config):
        targets = lora.find_targets(config.lora.targets, model_boxed)
        return lambda seed: train_state(
            lambda rng: lora.init_adapters(targets, config.lora.rank, rng), tx, seed
        )
    return lambda seed: init_state(model, tx, seed, model.example_inputs(1))


def train_iterator(config: ml_collections.ConfigDict, dataset: data.Dataset) -> Any:
    """This process's shard of each global training batch, in the config's seed's order."""
    return iter(
        dataset.loader(
            dataset.spec.train_split,
            batch_size=config.train.batch_size // jax.process_count(),
            seed=config.seed,
            shuffle=True,
            num_epochs=None,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
        )
    )


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of `config` (locked alike) whose seed is `seed`."""
    config = copy.deepcopy(config)
    config.seed = seed
    return config


def for_seed(exp: Experiment, seed: int) -> Experiment:
    """The same experiment with another seed: its own initialisation, dropout keys, data order
    and DP noise key, everything else (mesh, model, data, jitted steps) shared, so the seeds of
    a group (`runtime.group`) build and compile once. The seed enters the train step only
    through the state (its RNG; DP's noise key is in the optimizer state), which is why the
    steps can be shared. Its LoRA base, teacher, fine-tuning source and pruning are `exp`'s:
    none depends on the seed (a fine-tuned run starts from the source's parameters at any seed;
    LoRA's adapters are initialised from the seed)."""
    config = with_seed(exp.config, seed)
    tx = optimizer_lib.make_optimizer(config)  # DP-SGD's noise key comes from the seed
    return dataclasses.replace(
        exp,
        config=config,
        tx=tx,
        train_iter=train_iterator(config, exp.dataset),
        make_state=state_maker(config, exp.model, tx, exp.abstract_params),
    )


def load_teacher(
    config: ml_collections.ConfigDict,
    spec: data.DatasetSpec,
    mesh: Mesh,
    rules: tuple,
    recorded: dict[str, Any] | None,
) -> teacher_lib.Teacher:
    """The teacher run that `objective.distillation.teacher` names: its model from its own
    recorded config at the student's length, its parameters from its newest verified checkpoint
    (or the one `recorded`), sharded as the student's are: by their logical axes, through the
    student's rules, on the student's mesh. Reads nothing but the teacher's config and
    parameters, and writes nothing there; UsageError, naming the teacher, for a run that is not
    there, has no checkpoint that verifies, or does not fit the student's data or mesh."""
    path = config.objective.distillation.teacher
    with teacher_lib.blamed(path):
        teacher_config = run_config(path)
        teacher_spec = data_shapes(teacher_config)
        trained, _ = model_and_objective(teacher_config, teacher_spec)
        model = teacher_lib.at_student_length(trained, teacher_spec, spec)
        # The parameters' shapes are the model's as it was trained (its checkpoint's).
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(
                lambda: trained.init(jax.random.PRNGKey(0), trained.example_inputs(1), train=False)
            )["params"]
            specs = mesh_lib.param_specs(boxed)
            abstract = mesh_lib.unbox(boxed)
            mesh_lib.check_divisible(specs, abstract, mesh.shape, rules)
            shardings = mesh_lib.to_shardings(specs, mesh, rules)
        step, fingerprint = teacher_lib.checkpoint_to_read(path, recorded)
        params = checkpoint.restore_params(
            path, step, checkpoint.abstract_like(abstract, shardings)
        )
    return teacher_lib.Teacher(
        workdir=os.path.abspath(path),
        config=teacher_config,
        model=model,
        step=step,
        fingerprint=fingerprint,
        shardings=shardings,
        params=params,
    )


def untaught_step(*_: Any) -> None:
    raise UsageError(
        "this experiment was built without its distillation teacher (to read a trained run "
        "back), so it cannot train"
    )


def with_frozen(step: Callable, frozen: Any) -> Callable:
    """The jitted eval step as its callers call it, (params, batch): with LoRA, the frozen base
    passed as its third argument every call (an argument, not a constant baked into the
    program)."""
    if frozen is None:
        return step
    return lambda first, batch: step(first, batch, frozen)


def fresh_state(exp: Experiment) -> TrainState:
    """A new state of the config's seed, born sharded (each device initialises only its own
    shards). The seed is an argument of the program, not a constant in it, so that every seed
    compiles the same program; the values are bitwise those of a constant seed."""
    with exp.context():
        return jax.jit(
            lambda seed: mesh_lib.unbox(exp.make_state(seed)), out_shardings=exp.state_shardings
        )(np.int32(exp.config.seed))


def state_with_params(exp: Experiment, params: Any) -> TrainState:
    """A fresh state (step 0, the seed's RNG, the optimizer's initial state for these parameters)
    around given unboxed parameters, born sharded. The fresh state's own random parameters are
    never computed: nothing uses them, so jit drops them."""

    def around(params: Any) -> TrainState:
        fresh = mesh_lib.unbox(exp.make_state(exp.config.seed))
        return fresh.replace(params=params, opt_state=exp.tx.init(params))

    with exp.context():
        return jax.jit(
            around, in_shardings=(exp.state_shardings.params,), out_shardings=exp.state_shardings
        )(params)


def starting_state(exp: Experiment) -> TrainState:
    """The state a run starts from: an init, or with finetune.from_run the source's parameters
    and a fresh optimizer state (with LoRA, fresh adapters: the source is the frozen base)."""
    if exp.finetune_source is None or exp.frozen is not None:
        return fresh_state(exp)
    params = finetune.read_params(exp.finetune_source, exp.abstract_params, exp.mesh, exp.rules)
    return state_with_params(exp, params)


def initial_state(
    exp: Experiment, checkpoints: checkpoint.Checkpoints
) -> tuple[int, TrainState, bool]:
    """(start step, state, restored?): the newest checkpoint that verifies, with the data iterator
    where it was, or the starting state."""
    with exp.context():
        restored = checkpoints.restore_latest(exp.abstract_state, exp.train_iter)
    if restored is None:
        return 0, starting_state(exp), False
    step, state = restored
    return step, state, True


def require_checkpoints(workdir: str, purpose: str) -> None:
    if not checkpoint.has_checkpoints(workdir):
        raise UsageError(f"run {workdir!r} has no checkpoint to {purpose}")


def restored_state(
    exp: Experiment, workdir: str, purpose: str, step: int | None = None
) -> tuple[int, TrainState]:
    """(step, state) of the run's newest checkpoint that verifies, or of checkpoint `step`; a
    run without any checkpoint is a UsageError ('run ... has no checkpoint to <purpose>'), and
    so is a `step` it has no verified checkpoint of."""
    require_checkpoints(workdir, purpose)
    checkpoints = checkpoint.Checkpoints(workdir, exp.config.checkpoint.max_to_keep, False)
    try:
        if step is None:
            step, state, _ = initial_state(exp, checkpoints)
        else:
            with exp.context():
                state = checkpoints.restore_step(step, exp.abstract_state, exp.train_iter)
    finally:
        checkpoints.close()
    return step, state


def restored_params(
    config: ml_collections.ConfigDict, workdir: str, purpose: str, step: int | None = None
) -> tuple[int, Any]:
    """(step, the model's parameters as host arrays: a LoRA run's merged) for a run whose config
    is `config` (see `restored_state`); a run without checkpoints fails before its data are
    loaded."""
    require_checkpoints(workdir, purpose)
    exp = build(config, workdir=workdir, with_teacher=False)
    step, state = restored_state(exp, workdir, purpose, step)
    return step, jax.device_get(exp.model_params(state.params))
