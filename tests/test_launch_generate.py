"""`python -m launch.generate` as a user runs it, on a tiny byte-level run of pydoc_text: text
in, text out, the same seed giving the same tokens, and bad input refused in one line; and every
study's baseline arm: it generates, reading text where its dataset's tokens are text, or it is
refused in one line when it is not a sequence model."""

from __future__ import annotations

import functools
import importlib
import json
import re
import shutil
import subprocess

import flax.linen as nn
import jax
import pytest

import data
from data.tokenizer import ByteTokenizer
from generation.batches import generate_all
from generation.codecs import text_codec
from generation.decode import Generator
from generation.prompts import encode
from generation.sampling import Sampling
from launch.generate import parse_args, sequence_model, show
from runtime.errors import UsageError
from tests.conftest import REPO, run_module, run_train

# Learned positions: a model defined only up to its training length (pydoc_text's 128), so that
# a prompt it cannot continue that far is refused.
PYDOC = [
    "--config=experiments/pydoc_lm.py",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.d_ff=64",
    "--config.model.positional=learned",
    "--config.train.steps=10",
    "--config.train.batch_size=8",
    "--config.train.log_every=5",
    "--config.eval.every=10",
    "--config.eval.num_batches=1",
    "--config.checkpoint.every=5",
    # The generation suite: its continuations read as text; with learned positions the 120-token
    # prompts leave room for 9 new tokens, not 16.
    "--config.eval.suites=generation",
    "--config.eval.generation.prompts=2",
    "--config.eval.generation.prompt_tokens=120",
    "--config.eval.generation.new_tokens=16",
]


@pytest.fixture(scope="module")
def pydoc_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pydoc") / "run"
    result = run_train(data_dir, workdir, base=PYDOC)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def generate(data_dir: str, workdir, *args: str) -> subprocess.CompletedProcess:
    return run_module(data_dir, "launch.generate", f"--workdir={workdir}", *args)


def test_a_run_continues_text_prompts_the_same_seed_gives_the_same_tokens_and_stops(
    data_dir, pydoc_run, tmp_path
):
    """Printed (the newest checkpoint), written (--step=10, the same one), then written again
    with a stop token: each continuation ends at its own first stop token, the others go on."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The "}\n{"prompt": "def f(x):\\n  "}\n{"prompt": [40, 41]}\n')
    settings = [f"--prompts_file={prompts}", "--max_new_tokens=6", "--num_samples=2"]
    settings += ["--batch_size=4", "--top_k=40", "--seed=7"]

    def written(*args: str) -> list[dict]:
        out = tmp_path / "out.jsonl"
        result = generate(data_dir, pydoc_run, *settings, "--step=10", f"--output={out}", *args)
        assert result.returncode == 0, result.stderr
        assert f"6 continuation(s) of run {pydoc_run} at step 10 to {out}\n" in result.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    printed = generate(data_dir, pydoc_run, *settings)
    assert printed.returncode == 0, printed.stderr
    assert f"6 continuation(s) of run {pydoc_run} at step 10\n" in printed.stderr
    lines = written()
    assert [(x["prompt_index"], x["sample"]) for x in lines] == [
        (i, s) for i in range(3) for s in range(2)
    ]
    for x in lines:
        assert len(x["tokens"]) == 6 and x["ended"] == "max_new_tokens"
        assert x["text"] == ByteTokenizer().decode(x["tokens"])
    assert printed.stdout == "".join(
        f"--- prompt {x['prompt_index'] + 1}, sample {x['sample'] + 1} ---\n{x['text']}\n"
        for x in lines
    )
    assert lines[0]["tokens"] != lines[1]["tokens"]  # two samples of one prompt differ

    stop = lines[0]["tokens"][2]
    for x, y in zip(lines, written(f"--stop_token={stop}"), strict=True):
        if stop in x["tokens"]:
            cut = x["tokens"].index(stop) + 1
            assert y["tokens"] == x["tokens"][:cut] and y["ended"] == "stop_token"
            assert y["text"] == ByteTokenizer().decode(x["tokens"][: cut - 1])
        else:
            assert y == x


def test_the_generation_suite_shows_a_text_runs_continuations_as_text(data_dir, pydoc_run):
    result = json.loads((pydoc_run / "eval" / "generation.json").read_text())
    assert (result["prompts"], result["prompt_tokens"], result["new_tokens"]) == (2, 120, 9)
    assert result["cache_positions"] == 128  # every position the model has, and no more
    source = data.load("pydoc_text", {}, data_dir).source("validation")
    shown = (pydoc_run / "eval" / "generations.md").read_text()
    assert "shown as text" in shown
    text = ByteTokenizer()
    for i, continuation in enumerate(result["continuations"]):
        inputs = source[i]["inputs"].tolist()
        assert continuation["prompt"] == inputs[:120] and len(continuation["tokens"]) == 9
        for tokens in (inputs[:120], continuation["tokens"], inputs[120:]):
            assert "\n" + text.decode(tokens) + "\n" in shown


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--prompt="], "error: prompt 1 is empty: a continuation needs at least one token"),
        (
            ["--prompt=" + "x" * 126, "--max_new_tokens=4"],
            "error: prompt 1 has 126 token(s): with --max_new_tokens=4 it needs 129 positions, "
            "more than the 128 this model takes (learned positional embeddings exist only for the "
            "training positions)",
        ),
        (["--prompt=a", "--max_new_tokens=2", "--step=7"], "error: no checkpoint at step 7 in "),
    ],
    ids=["empty-prompt", "too-long", "no-such-step"],
)
def test_bad_input_is_one_line_and_exit_2(data_dir, pydoc_run, args, error):
    result = generate(data_dir, pydoc_run, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(error)


def test_a_token_outside_the_vocabulary_is_refused(data_dir, pydoc_run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": [104, 256]}\n')
    result = generate(data_dir, pydoc_run, f"--prompts_file={prompts}", "--max_new_tokens=2")
    assert result.returncode == 2
    assert (
        result.stderr == "error: prompt 2: token 256 is outside the model's vocabulary (0..255)\n"
    )


def test_a_run_without_a_checkpoint_is_refused(data_dir, pydoc_run, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(pydoc_run / "config.json", untrained / "config.json")
    result = generate(data_dir, untrained, "--prompt=a", "--max_new_tokens=2")
    assert result.returncode == 2
    assert result.stderr == f"error: run {str(untrained)!r} has no checkpoint to generate from\n"


def test_with_a_draft_run_greedy_continuations_are_the_runs_own_and_acceptance_is_reported(
    data_dir, pydoc_run, tmp_path
):
    """The run drafting for itself (a draft needs only the same tokens): at --temperature=0 the
    continuations are the run's own greedy ones; each line of --output says what the draft did,
    and stderr sums it up."""
    settings = ["--prompt=The ", "--prompt=def f(x):", "--max_new_tokens=9", "--temperature=0"]

    def written(*args: str) -> tuple[list[dict], str]:
        out = tmp_path / f"out{len(args)}.jsonl"
        result = generate(data_dir, pydoc_run, *settings, f"--output={out}", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in out.read_text().splitlines()], result.stderr

    alone, _ = written()
    drafted, stderr = written(f"--draft_workdir={pydoc_run}", "--draft_tokens=3")
    assert [x["tokens"] for x in drafted] == [x["tokens"] for x in alone]
    assert all("draft" not in x for x in alone)
    records = [x["draft"] for x in drafted]
    for r in records:
        assert r["proposed"] == 3 * r["target_passes"] and 0 <= r["accepted"] <= r["proposed"]
    accepted, proposed = (sum(r[key] for r in records) for key in ("accepted", "proposed"))
    passes = sum(r["target_passes"] + 1 for r in records)  # + the prompt's prefill
    assert (
        f"draft run {pydoc_run} at step 10, --draft_tokens=3: {accepted} of {proposed} draft "
        f"tokens accepted ({accepted / proposed:.1%}); {18 / passes:.2f} tokens a target pass "
        "(prefill included)\n"
    ) in stderr


def test_a_draft_over_other_tokens_is_refused(data_dir, pydoc_run, tmp_path):
    """Another dataset parameter (here the validation fraction, which moves the training text)
    is another corpus, hence possibly other tokens; a run without checkpoints is enough to be
    refused, before anything is restored."""
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((pydoc_run / "config.json").read_text())
    config["data"]["pydoc_text"]["val_fraction"] = 0.2
    (other / "config.json").write_text(json.dumps(config))
    result = generate(data_dir, pydoc_run, "--prompt=a", f"--draft_workdir={other}")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: draft run {str(other)!r} does not share the target's tokens: it trained on "
        "pydoc_text {'val_fraction': 0.2}, the target on pydoc_text {'val_fraction': 0.1} (a "
        "draft needs the same dataset and data parameters, seq_len aside)\n"
    )


def test_a_prompt_the_draft_rounds_would_carry_past_the_models_length_is_refused(
    data_dir, pydoc_run
):
    """The last round verifies --draft_tokens past the last token, and the draft's chunk one
    further: 122 + 4 - 1 + 3 + 1 = 129 positions of a model of 128 (learned positions)."""
    args = ["--prompt=" + "x" * 122, "--max_new_tokens=4", "--draft_tokens=3"]
    result = generate(data_dir, pydoc_run, *args, f"--draft_workdir={pydoc_run}")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: prompt 1 has 122 token(s): with --max_new_tokens=4 and --draft_tokens=3 it "
        "needs 129 positions, more than the 128 this model takes"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--prompt=a", "--draft_tokens=2"], "--draft_tokens needs --draft_workdir"),
        (["--prompt=a", "--draft_workdir=d", "--draft_tokens=0"], "--draft_tokens must be >= 1"),
        (["--prompt=a", "--prompts_file=p.txt"], "give --prompt=... (repeatable) or --prompts"),
        ([], "give --prompt=... (repeatable) or --prompts_file"),
        (["--prompt=a", "--num_samples=0"], "--num_samples must be >= 1, got 0"),
        (["--prompt=a", "--output=/no/such/dir/out.jsonl"], "directory '/no/such/dir' does not"),
    ],
)
def test_command_lines_that_ask_for_nothing_sensible_are_refused(args, error):
    with pytest.raises(UsageError, match=re.escape(error)):
        parse_args(["launch.generate", "--workdir=runs/x", *args])


# ---------------------------------------------------------------------- every study's baseline

# How launch.generate treats each study's baseline arm: continues ids, continues text, or refuses
# (not a sequence model). A new study file must say which.
STUDIES = {
    "mqar_mixers": "ids",
    "mad_tasks": "ids",
    "text_lm": "text",
    "pydoc_lm": "text",
    "reference_lm": "text",
    "decode_lm": "text",
    "compress_lm": "text",
    "digits_mlp": "refused",
    "dp_digits": "refused",
}
NOT_STUDIES = {"__init__", "base", "from_run"}  # the base config; a converted run's fine-tune
# The study's own model at the size of a test.
TINY_MODEL = {"model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2, "model.d_ff": 64}
# Data whose tokenizer is made when they are prepared (text_lm's BPE), prepared as the run's
# training would have, on two stdlib packages (tests/test_text_lm.py prepares the same).
PREPARED = {
    "python_stdlib": {
        "modules": "json,email",
        "vocab_size": 300,
        "seq_len": 32,
        "val_fraction": 0.5,
    }
}


def test_every_study_file_says_how_its_runs_generate():
    found = {p.stem for p in (REPO / "experiments").glob("*.py")} - NOT_STUDIES
    assert found == set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_each_studys_baseline_arm_generates_or_is_refused_in_one_line(study, data_dir, capsys):
    """The baseline arm's model at a tiny size, freshly initialised (what launch.generate does
    after restoring a checkpoint, from the same pieces): four greedy tokens, printed as text or
    ids. A classifier is refused with the error launch.generate exits 2 with."""
    config = importlib.import_module(f"experiments.{study}").get_config()
    config.data.dir = data_dir
    if config.model.name == "lm":
        config.update_from_flattened_dict(TINY_MODEL)
    if STUDIES[study] == "refused":
        with pytest.raises(UsageError, match=r"only sequence models \(model.name=lm\) generate"):
            sequence_model(config, f"runs/{study}")
        return

    if config.data.name in PREPARED:
        params = config.data[config.data.name]
        params.update(PREPARED[config.data.name])
        data.load(config.data.name, params.to_dict(), data_dir)
    model, spec = sequence_model(config, f"runs/{study}")
    codec = text_codec(config, f"runs/{study}")
    assert (codec is not None) == (STUDIES[study] == "text")
    init = jax.jit(functools.partial(model.init, train=False))
    params = nn.unbox(init(jax.random.key(0), model.example_inputs(1)))["params"]
    prompts = encode(["def f(x):" if codec else "1 2 3"], codec, spec.vocab_size)
    generator = Generator(model, 4, Sampling(temperature=0.0))
    [continuation] = generate_all(generator, params, prompts, num_samples=1, batch_size=1, seed=0)
    assert len(continuation.tokens) == 4
    assert all(0 <= t < spec.vocab_size for t in continuation.tokens)
    capsys.readouterr()
    show([continuation], codec)
    shown = codec.decode(continuation.tokens) if codec else " ".join(map(str, continuation.tokens))
    assert capsys.readouterr().out == shown + "\n"
