"""The full set of config keys a run understands, with their defaults.

Every experiment file starts from `base_config()` and overrides what its study is about. The
returned dict is locked by the loader, so a key that is not here is an error, not a silent no-op.
Nothing in here is derived from other values: the training loop derives (vocabulary size from
the dataset, per-process batch from the mesh, ...).
"""

import ml_collections

import data
import models
import objectives

# Logical axis name -> mesh axes. Parameters and activations name logical axes only; this table
# decides the parallelism (MaxText-style). A mesh axis already taken by an earlier dimension of
# the same array is skipped, so activations ('batch', 'length', 'embed') keep 'embed' replicated
# while the 'embed' dimension of a weight is sharded over 'fsdp'.
DEFAULT_SHARDING_RULES = (
    ("batch", ("data", "fsdp", "expert")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv_heads", None),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("conv", None),
    ("state", None),
    ("expert", "expert"),
)


# Keys added to base_config after runs had been recorded without them, each with the value that
# does what those runs did before the key existed, so such a run still reads, resumes and
# compares as itself (runtime.workdir.recorded_config). A key whose absence cannot be read this
# way (a default that changed, as mqar's `answers` did) stays out: runs older than it are refused.
KEYS_ADDED_LATER: dict[str, object] = {
    "objective.distillation.teacher": "",
    # The generation suite's settings: read only by that suite, which older runs could not name.
    "eval.generation.prompts": 4,
    "eval.generation.prompt_tokens": 32,
    "eval.generation.new_tokens": 32,
    "finetune.from_run": "",
    "lora.rank": 0,
    # With rank 0 the next two are not read.
    "lora.alpha": 16.0,
    "lora.targets": ".*/(query|key|value|out)",
    # The profiler only watches a run: 0 is no trace, and the rest are not read then.
    "profile.start_step": 0,
    "profile.num_steps": 3,
    "profile.host_tracer_level": 2,
    "profile.python_tracer_level": 0,
    "profile.perfetto": True,
    # Sparsity 0 is no pruning; the rest are not read then.
    "prune.sparsity": 0.0,
    "prune.start_step": 0,
    "prune.end_step": 0,
    "prune.every": 10,
    "prune.scope": "per_layer",
    "prune.pattern": "unstructured",
    "prune.targets": "*/kernel,*/experts/*",
    "prune.exclude": (
        "*embed*,head/*,*conv*,*/dt_proj/*,*/dt/*,*/decay/*,*/beta/*,*/filter/*,*/router/*"
    ),
    # Mode none is a float model; targets and source are not read then.
    "quant.mode": "none",
    "quant.targets": models.lm.PROJECTIONS,
    "quant.source": "",
}


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "lm"  # lm (sequence models, any mixer) | mlp | vit | mlp_mixer (images)
    c.model.num_layers = 2
    c.model.d_model = 64
    c.model.num_heads = 4
    c.model.d_ff = 256
    c.model.dropout_rate = 0.0
    c.model.remat = "none"  # none | full | dots | dots_no_batch (models.blocks.REMAT_POLICIES)
    # Sequence models (model.name='lm'): which mixer, and the block around it.
    c.model.mixer = "attention"
    c.model.layer_pattern = ""  # hybrids: "AMAM" (mixer letters) or "attention,mamba"
    c.model.channel_mixer = "swiglu"  # swiglu | gelu_mlp | none (| moe)
    c.model.short_conv = 0  # kernel of a causal depthwise conv in front of every mixer; 0: none
    c.model.short_conv_gate = False  # Zoology's BaseConv: conv(h) * (h W + b) + h
    c.model.norm = "rms"  # rms | layer
    c.model.norm_eps = 0.0  # the blocks' and final norm's epsilon; 0: rms 1e-6, layer 1e-5
    c.model.use_bias = False
    c.model.positional = "rope"  # rope | learned | none
    c.model.tie_embeddings = False
    for name in models.CONFIG_SECTIONS.names():  # each mixer's / family's own options
        c.model[name] = ml_collections.ConfigDict(models.CONFIG_SECTIONS.get(name))

    c.data = ml_collections.ConfigDict()
    c.data.name = "mqar"
    c.data.dir = ""  # '' -> $ARCHLAB_DATA_DIR, else ~/.cache/archlab/datasets
    for name in data.DATASETS.names():  # each dataset's builder parameters, under its own name
        c.data[name] = ml_collections.ConfigDict(data.default_params(name))

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "next_token_xent"
    c.objective.update(objectives.OPTION_DEFAULTS)  # z_loss, label_smoothing, distillation's
    # objective.name=distillation: the teacher's run directory (its model and newest verified
    # checkpoint; runtime/teacher.py). temperature and alpha above set the loss.
    c.objective.distillation = ml_collections.ConfigDict()
    c.objective.distillation.teacher = ""

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | lion | sgd | adafactor
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.9  # sgd only
    c.optimizer.nesterov = False  # sgd only
    c.optimizer.weight_decay = 0.1
    c.optimizer.decay_embeddings = False  # norms and biases are never decayed
    c.optimizer.grad_clip_norm = 1.0  # 0 disables clipping
    c.optimizer.schedule = "cosine"  # cosine | linear | constant
    c.optimizer.warmup_steps = 50
    c.optimizer.end_lr_fraction = 0.1  # final lr = learning_rate * end_lr_fraction

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 64  # global, across all processes
    c.train.grad_accum_steps = 1
    c.train.compute_dtype = "float32"  # float32 | bfloat16; parameters stay float32
    c.train.log_every = 50

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 250
    c.eval.batch_size = 128
    c.eval.num_batches = 0  # 0 -> the whole evaluation split
    # Evaluation beyond accuracy (launch.evaluate; run by launch.train when the run completes).
    # Each suite says "not applicable" with the reason where the data or model does not allow it.
    # comma-separated; '' = none; `generation` is not run unless named
    c.eval.suites = "calibration,robustness,slices,groups"
    c.eval.calibration_bins = 15
    c.eval.corruption_rates = (0.05, 0.1, 0.2, 0.4)  # sequences: token substitution rates
    c.eval.length_factors = (2, 4)  # sequences: evaluate at these multiples of the length
    c.eval.noise_stddevs = (0.1, 0.2, 0.4)  # images: Gaussian pixel noise
    c.eval.shifts = (1, 2)  # images: translation in pixels (right and down, zero fill)
    c.eval.hardest_examples = 8  # dumped readably by the slices suite
    # The generation suite (sequence models; add `generation` to eval.suites): greedy
    # continuations of the first `prompts` evaluation examples cut to `prompt_tokens` tokens,
    # in eval/generations.md, with the decoding state's bytes and the time per token.
    c.eval.generation = ml_collections.ConfigDict()
    c.eval.generation.prompts = 4
    c.eval.generation.prompt_tokens = 32
    c.eval.generation.new_tokens = 32

    # int8 quantization with qwix (runtime/quantization.py): none | qat_int8 (trained by
    # launch.train) | ptq_int8_weights | ptq_int8 (written by launch.quantize from a trained run).
    c.quant = ml_collections.ConfigDict()
    c.quant.mode = "none"
    # Module paths quantized (a regular expression, fully matched): by default the projections,
    # never a recurrence's gates or state contractions.
    c.quant.targets = models.lm.PROJECTIONS
    c.quant.source = ""  # a post-training mode's source run (launch.quantize records it)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 250
    c.checkpoint.max_to_keep = 2
    c.checkpoint.async_save = True

    # Fine-tuning (runtime/finetune.py): the parameters start as another run's instead of an
    # init, with a fresh optimizer. ('from' itself cannot be a key: ml_collections parses
    # --config.<path> as Python, where it is a keyword.)
    c.finetune = ml_collections.ConfigDict()
    c.finetune.from_run = ""  # '<run dir>[@step]'; no step: its newest checkpoint that verifies
    # LoRA (runtime/lora.py): with finetune.from_run, only low-rank adapters of the weight
    # matrices of the modules `targets` matches train; the source run's parameters stay frozen.
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 0  # 0: off (every parameter trains)
    c.lora.alpha = 16.0  # the update is (alpha / rank) * A B
    c.lora.targets = ".*/(query|key|value|out)"  # re.fullmatch of module paths: attention's

    # Differential privacy: DP-SGD (Abadi et al. 2016) through optax's DP aggregate. Each
    # example's gradient is clipped to l2_clip_norm, Gaussian noise of std
    # noise_multiplier * l2_clip_norm is added to their sum, and the run reports the epsilon it
    # has spent at `delta` (runtime/privacy.py). Needs optimizer.grad_clip_norm=0 and
    # train.grad_accum_steps=1.
    c.privacy = ml_collections.ConfigDict()
    c.privacy.dp_sgd = False
    c.privacy.l2_clip_norm = 1.0
    c.privacy.noise_multiplier = 1.1
    c.privacy.delta = 1e-5  # keep it below 1 / (training examples)
    c.privacy.accountant = "rdp"  # rdp | pld (dp_accounting's two accountants)

    # Gradual magnitude pruning (Zhu & Gupta 2017), chained after the optimizer's update
    # (runtime/pruning.py): between start_step and end_step, every `every` steps (and at
    # end_step), the smallest-magnitude targeted weights are set to zero, up to
    # s_t = sparsity * (1 - (1 - (t - start_step) / (end_step - start_step))^3); held after.
    # The masks live in the optimizer state, so checkpoints keep them.
    c.prune = ml_collections.ConfigDict()
    c.prune.sparsity = 0.0  # final fraction of targeted weights that are zero; 0: no pruning
    c.prune.start_step = 0
    c.prune.end_step = 0  # > start_step and <= train.steps when pruning
    c.prune.every = 10  # steps between mask updates
    c.prune.scope = "per_layer"  # per_layer (each array to `sparsity`) | global (one threshold)
    # unstructured | N:M (e.g. 2:4: in every M consecutive weights along a kernel's last axis,
    # M - N are pruned; prune.sparsity must then be 1 - N/M, and scope is not used)
    c.prune.pattern = "unstructured"
    # Comma-separated globs (fnmatch: '*' crosses '/') over parameter paths
    # ('block_0/channel/up/kernel'): an array of >= 2 dimensions is pruned when a `targets`
    # glob matches and no `exclude` one does. The defaults: the kernels of dense projections
    # (attention, MLPs, experts, Mamba's and Hyena's in/out projections), not embeddings or
    # output heads, convolutions, or the SSM/gating parameters that set a recurrent state's
    # dynamics (dt, decay, beta, filters).
    c.prune.targets = "*/kernel,*/experts/*"
    c.prune.exclude = (
        "*embed*,head/*,*conv*,*/dt_proj/*,*/dt/*,*/decay/*,*/beta/*,*/filter/*,*/router/*"
    )

    # Where metrics go (runtime/metric_writers.py), from process 0. jsonl (metrics.jsonl) is
    # required: resume, studies and reports read it. mlflow: runtime/mlflow_tracking.py.
    c.tracking = ml_collections.ConfigDict()
    c.tracking.backends = "jsonl,tensorboard"  # comma-separated: jsonl | tensorboard | mlflow
    # '' -> $MLFLOW_TRACKING_URI, else sqlite in the run's (a study's: the study's) directory
    c.tracking.mlflow_uri = ""

    # A trace of chosen training steps with JAX's profiler (runtime/profiling.py), written under
    # <workdir>/profile/ for TensorBoard's profile plugin (xprof) and Perfetto. It watches the run
    # and changes none of its numbers, so it may differ between a run's attempts.
    c.profile = ml_collections.ConfigDict()
    c.profile.start_step = 0  # the first global step traced (from 1); 0: no trace
    c.profile.num_steps = 3  # steps traced from start_step on
    c.profile.host_tracer_level = 2  # 0 off .. 3 verbose: host threads (jax's default 2)
    # 1: every Python call in the trace too (jax's default), which slows the Python it traces
    c.profile.python_tracer_level = 0
    c.profile.perfetto = True  # also perfetto_trace.json.gz, for https://ui.perfetto.dev

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not taken by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.expert = 1  # MoE experts are split over this axis; elsewhere it is data parallelism

    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = DEFAULT_SHARDING_RULES
    return c


def arm_and_setting(
    arg: str | None, arms: dict, settings: dict, baseline: str, default_setting: str
) -> tuple[str, str]:
    """A study file's `get_config` argument, `"<arm>[,<setting>]"`, checked against its ARMS and
    SETTINGS (an unknown one is a ValueError listing the valid ones)."""
    arm, _, setting = (arg or baseline).partition(",")
    setting = setting or default_setting
    if arm not in arms:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(arms)}")
    if setting not in settings:
        raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(settings)}")
    return arm, setting
