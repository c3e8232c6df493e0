"""Hugging Face checkpoints in and out (`launch.convert`, convert/): a transformers model and its
archlab conversion compute the same float32 logits, and so does the transformers model written
back from archlab; a converted checkpoint is an ordinary run that evaluates and fine-tunes;
what has no exact counterpart is refused in one line.

The models are small random ones built here with transformers (nothing downloaded), every
parameter drawn at random (norm scales too), with RoPE base and norm epsilon far from archlab's
defaults, so that a key the conversion forgot changes the logits well beyond the tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

import convert
from convert import hf_dir, run_dir
from experiments.base import base_config
from generation.codecs import text_codec
from launch import convert as convert_cli
from runtime import assembly
from runtime.checkpoint_seal import check_seal
from runtime.config import to_json
from runtime.workdir import run_config
from tests.conftest import run_module
from tests.test_codecs import hub_tokenizer

pytestmark = pytest.mark.long(seconds=95)

VOCAB, SEQ_LEN = 48, 12
# Logits agree to this fraction of their largest magnitude (float32 throughout).
RELATIVE_TOLERANCE = 1e-4
TINY_DATA = [
    f"--config.data.induction_head.seq_len={SEQ_LEN}",
    "--config.data.induction_head.train_examples=64",
    "--config.data.induction_head.eval_examples=16",
]

LLAMA = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    rms_norm_eps=0.05,
    rope_theta=100.0,
)
LLAMA_FAMILY = {
    "llama-gqa-untied": (transformers.LlamaConfig, dict(num_key_value_heads=2)),
    "llama-mha-tied": (
        transformers.LlamaConfig,
        dict(num_key_value_heads=4, tie_word_embeddings=True),
    ),
    "llama-attention-bias": (
        transformers.LlamaConfig,
        dict(num_key_value_heads=2, attention_bias=True),
    ),
    "llama-every-bias": (
        transformers.LlamaConfig,
        dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True),
    ),
    "qwen2-tied": (
        transformers.Qwen2Config,
        dict(num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "mistral-window": (transformers.MistralConfig, dict(num_key_value_heads=2, sliding_window=5)),
}
MAMBA = dict(
    vocab_size=VOCAB,
    hidden_size=24,
    num_hidden_layers=2,
    state_size=4,
    conv_kernel=3,
    expand=2,
    time_step_rank=3,
    layer_norm_epsilon=0.05,
)
MAMBA_FAMILY = {
    "mamba-tied": dict(),
    "mamba-untied": dict(tie_word_embeddings=False),
    "mamba-no-conv-bias": dict(use_conv_bias=False),
}


def random_hf_model(config: transformers.PretrainedConfig, seed: int = 0) -> torch.nn.Module:
    """The causal LM of `config`, every parameter random: matrices N(0, 1/fan_in), norm scales
    1 + N(0, 0.1^2), other vectors N(0, 0.1^2)."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn_like(p)
            if "norm" in name:
                p.copy_(1 + 0.1 * noise)
            elif p.ndim >= 2:
                p.copy_(noise * p.shape[-1] ** -0.5)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def hf_logits(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


def archlab_logits(config, params, tokens: np.ndarray) -> np.ndarray:
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    logits = model.apply({"params": params}, jnp.asarray(tokens, jnp.int32), train=False)
    return np.asarray(logits)


def assert_same_logits(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert error <= RELATIVE_TOLERANCE, f"relative error {error:.2e}"


def random_tokens(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(2, SEQ_LEN))


def round_trip(hf_model: torch.nn.Module, tmp_path) -> None:
    """transformers -> archlab -> transformers: each step's logits equal the first's."""
    source, exported = str(tmp_path / "hf"), str(tmp_path / "exported")
    hf_model.save_pretrained(source)
    hf = hf_dir.read_config(source)
    family, config = convert.checkpoint_config(hf, TINY_DATA)
    params = convert.params_from_checkpoint(source, hf, family, config)
    tokens = random_tokens()
    expected = hf_logits(hf_model, tokens)
    assert_same_logits(archlab_logits(config, params, tokens), expected)

    convert.write_checkpoint(config, params, exported)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    assert type(reloaded) is type(hf_model)
    assert_same_logits(hf_logits(reloaded, tokens), expected)


# ------------------------------------------------------------------------- logits, both ways


@pytest.mark.parametrize("variant", sorted(LLAMA_FAMILY))
def test_llama_family_logits_match_both_ways(variant, tmp_path):
    config_class, options = LLAMA_FAMILY[variant]
    round_trip(random_hf_model(config_class(**LLAMA, **options)), tmp_path)


@pytest.mark.parametrize("variant", sorted(MAMBA_FAMILY))
def test_mamba_logits_match_both_ways(variant, tmp_path):
    config = transformers.MambaConfig(**MAMBA, **MAMBA_FAMILY[variant])
    round_trip(random_hf_model(config), tmp_path)


def test_bfloat16_weights_convert_exactly(tmp_path):
    """Real checkpoints are mostly bfloat16, which numpy cannot hold: read through JAX's."""
    hf_model = random_hf_model(transformers.LlamaConfig(**LLAMA, num_key_value_heads=2))
    hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    hf = hf_dir.read_config(str(tmp_path / "hf"))
    family, config = convert.checkpoint_config(hf, TINY_DATA)
    params = convert.params_from_checkpoint(str(tmp_path / "hf"), hf, family, config)
    embedding = hf_model.model.embed_tokens.weight.float().detach().numpy()
    np.testing.assert_array_equal(params["embed"]["embedding"], embedding)


def test_sharded_checkpoints_read_as_one(tmp_path):
    hf_model = random_hf_model(transformers.MambaConfig(**MAMBA))
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 1
    hf = hf_dir.read_config(str(tmp_path / "hf"))
    family, config = convert.checkpoint_config(hf, TINY_DATA)
    params = convert.params_from_checkpoint(str(tmp_path / "hf"), hf, family, config)
    tokens = random_tokens()
    assert_same_logits(archlab_logits(config, params, tokens), hf_logits(hf_model, tokens))


# ------------------------------------------------------------------- a converted run is a run


def test_converted_run_evaluates_fine_tunes_and_exports(data_dir, tmp_path, monkeypatch):
    source, run, exported = tmp_path / "hf", tmp_path / "run", tmp_path / "exported"
    hf_model = random_hf_model(transformers.LlamaConfig(**LLAMA, num_key_value_heads=2))
    hf_model.save_pretrained(source)
    hub_tokenizer(source / "tokenizer.json")  # its text encoding travels with the checkpoint
    converted = run_module(
        data_dir,
        "launch.convert",
        f"--from_hf={source}",
        f"--workdir={run}",
        *TINY_DATA,
        "--config.train.steps=2",
        "--config.train.batch_size=8",
        "--config.train.log_every=1",
        "--config.eval.batch_size=8",
        "--config.eval.every=2",
        "--config.eval.suites=",
    )
    assert converted.returncode == 0, converted.stderr
    assert check_seal(str(run / "checkpoints" / "0")) is None  # sealed, as a training run's
    record = json.loads((run / "manifest.json").read_text())
    assert record["status"] == "converted"
    digests = record["converted_from"]["sha256"]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert digests[name] == hashlib.sha256((source / name).read_bytes()).hexdigest()
    assert (run / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()

    evaluated = run_module(data_dir, "launch.evaluate", f"--workdir={run}", "--suite=calibration")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["step"] == 0

    # Fine-tuning: launch.train resumes the run at step 1 with exactly its recorded config.
    trained = run_module(
        data_dir,
        "launch.train",
        f"--config=experiments/from_run.py:{run}",
        f"--workdir={run}",
    )
    assert trained.returncode == 0, trained.stderr
    record = json.loads((run / "manifest.json").read_text())
    assert record["status"] == "completed"
    assert record["attempts"][-1]["resumed_from_step"] == 0

    exported_run = run_module(data_dir, "launch.convert", f"--workdir={run}", f"--to_hf={exported}")
    assert exported_run.returncode == 0, exported_run.stderr
    assert "wrote step 2" in exported_run.stdout
    assert (exported / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    tuned = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    tokens = random_tokens()
    assert not np.allclose(hf_logits(tuned, tokens), hf_logits(hf_model, tokens))  # it trained
    monkeypatch.setenv("ARCHLAB_DATA_DIR", data_dir)
    config = run_config(str(run))
    # induction_head's tokens are ids, yet the run reads text: with the checkpoint's tokenizer.
    assert text_codec(config, str(run)).encode(["hello world"])[0].tolist() == [0, 3, 4]
    step, params = run_dir.read_params(str(run), config)
    assert step == 2
    assert_same_logits(archlab_logits(config, params, tokens), hf_logits(tuned, tokens))


def test_a_converted_run_is_a_source_for_lora_fine_tuning(data_dir, tmp_path, monkeypatch):
    source, run, tuned = tmp_path / "hf", tmp_path / "run", tmp_path / "tuned"
    random_hf_model(transformers.LlamaConfig(**LLAMA, num_key_value_heads=2)).save_pretrained(
        source
    )
    monkeypatch.setenv("ARCHLAB_DATA_DIR", data_dir)
    hf = hf_dir.read_config(str(source))
    settings = [
        "--config.train.steps=2",
        "--config.train.batch_size=8",
        "--config.eval.batch_size=8",
        "--config.eval.every=2",
        "--config.eval.suites=",
    ]
    family, config = convert.checkpoint_config(hf, [*TINY_DATA, *settings])
    params = convert.params_from_checkpoint(str(source), hf, family, config)
    origin = {"directory": str(source), "model_type": "llama"}
    run_dir.write_converted_run(str(run), config, params, origin, ["launch.convert"])

    trained = run_module(
        data_dir,
        "launch.train",
        f"--config=experiments/from_run.py:{run}",
        f"--workdir={tuned}",
        f"--config.finetune.from_run={run}",
        "--config.lora.rank=2",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((tuned / "manifest.json").read_text())
    assert record["status"] == "completed"
    assert record["finetuned_from"]["step"] == 0
    # Per layer: query 32 -> 4 heads x 8, key and value 32 -> 2 kv heads x 8, out 32 -> 32.
    assert record["trainable_params"] == 2 * 2 * ((32 + 32) + 2 * (32 + 16) + (32 + 32))


# ------------------------------------------------------------------------ one-line refusals


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """launch.convert in this process: (exit status, stderr)."""
    monkeypatch.setenv("ARCHLAB_KEEP_FREED_MEMORY", "0")  # leave this process's malloc alone
    capsys.readouterr()  # what came before (transformers' progress bars) is not the command's
    try:
        status = convert_cli.main(["launch.convert", *args])
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def saved_llama(tmp_path, **edits) -> str:
    """A tiny Llama's directory, its config.json edited by `edits` (None deletes a key)."""
    directory = tmp_path / "hf"
    random_hf_model(transformers.LlamaConfig(**LLAMA, num_key_value_heads=2)).save_pretrained(
        directory
    )
    config = json.loads((directory / "config.json").read_text())
    config.update(edits)
    config = {k: v for k, v in config.items() if v is not None}
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


@pytest.mark.parametrize(
    "edits, fragments",
    [
        (
            {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 100.0}},
            ["RoPE type 'llama3'", "rope_scaling"],
        ),
        ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, ["linear"]),
        ({"head_dim": 16}, ["head_dim=16", "hidden_size / num_attention_heads = 8"]),
        ({"hidden_act": "gelu"}, ["hidden_act='gelu'"]),
        ({"mlp_bias": True}, ["mlp_bias without attention_bias"]),
        (
            {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
            ["model_type 'gpt2'", "LlamaForCausalLM (llama)", "MambaForCausalLM (mamba)"],
        ),
        ({"architectures": ["LlamaForSequenceClassification"]}, ["LlamaForSequenceClassification"]),
    ],
)
def test_unsupported_checkpoints_are_refused_in_one_line(
    edits, fragments, tmp_path, monkeypatch, capsys
):
    source = saved_llama(tmp_path, **edits)
    status, err = run_cli(
        monkeypatch, capsys, f"--from_hf={source}", f"--workdir={tmp_path / 'run'}", *TINY_DATA
    )
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "run").exists()


def test_conversion_leaves_fine_tuning_to_a_new_run(tmp_path, monkeypatch, capsys):
    status, err = run_cli(
        monkeypatch,
        capsys,
        f"--from_hf={saved_llama(tmp_path)}",
        f"--workdir={tmp_path / 'run'}",
        *TINY_DATA,
        "--config.lora.rank=4",
    )
    assert status == 2 and err.count("\n") == 1, err
    assert "--config.lora.rank: a converted run holds the checkpoint's own parameters" in err
    assert not (tmp_path / "run").exists()


def test_mamba_with_projection_biases_is_refused(tmp_path, monkeypatch, capsys):
    source = tmp_path / "hf"
    random_hf_model(transformers.MambaConfig(**MAMBA, use_bias=True)).save_pretrained(source)
    status, err = run_cli(monkeypatch, capsys, f"--from_hf={source}", f"--workdir={tmp_path}/r")
    assert status == 2 and "use_bias=true" in err and "in_proj and out_proj" in err


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--config.data.name=pydoc_text"], ["dataset 'pydoc_text'", "256", "48"]),
        (["--config.model.d_model=64"], ["--config.model.d_model", "checkpoint's own"]),
        (["--config.model.d_modle=64"], ["unknown config key", "did you mean"]),
        (["--config.train.steps=many"], ["train.steps"]),
    ],
)
def test_run_settings_that_do_not_fit_the_checkpoint(
    args, fragments, tmp_path, monkeypatch, capsys
):
    source = saved_llama(tmp_path)
    status, err = run_cli(
        monkeypatch, capsys, f"--from_hf={source}", f"--workdir={tmp_path / 'run'}", *args
    )
    assert status == 2 and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "run").exists()


def test_a_missing_tensor_is_named_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    source = saved_llama(tmp_path)
    weights = os.path.join(source, "model.safetensors")
    tensors = safetensors.numpy.load_file(weights)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})
    status, err = run_cli(
        monkeypatch, capsys, f"--from_hf={source}", f"--workdir={tmp_path / 'run'}", *TINY_DATA
    )
    assert status == 2 and "no tensor 'model.layers.1.mlp.up_proj.weight'" in err
    assert not (tmp_path / "run").exists()


def test_a_workdir_that_exists_is_never_written_over(tmp_path, monkeypatch, capsys):
    source = saved_llama(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    status, err = run_cli(
        monkeypatch, capsys, f"--from_hf={source}", f"--workdir={tmp_path / 'run'}", *TINY_DATA
    )
    assert status == 2 and "exists and is not empty" in err
    assert os.listdir(tmp_path / "run") == ["notes.txt"]


@pytest.mark.parametrize(
    "model, fragments",
    [
        ({"norm": "layer"}, ["model.norm='layer'", "have rms"]),
        ({"layer_pattern": "AM"}, ["attention, mamba", "every layer"]),
        ({"mixer": "hyena"}, ["hyena"]),
        ({"attention": {"qk_norm": True}}, ["qk_norm"]),
        ({"mixer": "mamba", "channel_mixer": "swiglu"}, ["channel_mixer='swiglu'"]),
    ],
)
def test_runs_transformers_cannot_compute_are_refused_before_any_work(
    model, fragments, tmp_path, monkeypatch, capsys
):
    config = base_config()
    for key, value in model.items():
        if isinstance(value, dict):
            config.model[key].update(value)
        else:
            config.model[key] = value
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(to_json(config))
    status, err = run_cli(
        monkeypatch, capsys, f"--workdir={tmp_path / 'run'}", f"--to_hf={tmp_path / 'out'}"
    )
    assert status == 2 and err.count("\n") == 1 and "export" in err, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "out").exists()
