"""The evaluation suites: what launch.evaluate (and a completed launch.train) writes, and the
pieces it is made of. The calibration metrics themselves are tested in test_calibration.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data
import models
from analysis import model_card, slices
from data import corruptions
from data.digits import ink_groups
from data.mqar import distance_buckets
from experiments import mqar_mixers
from runtime import assembly
from runtime.errors import UsageError
from runtime.workdir import run_config
from tests.conftest import run_module, run_train, tiny_overrides

pytestmark = pytest.mark.long(seconds=170)

# ---------------------------------------------------------------------------------- corruptions


def test_token_substitution_rate_zero_is_identity_and_rate_one_rewrites_nearly_all():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, size=(50, 40)).astype(np.int32)
    same = corruptions.substitute_tokens(tokens, 0.0, 64, np.random.default_rng(1))
    np.testing.assert_array_equal(same, tokens)
    changed = corruptions.substitute_tokens(tokens, 1.0, 64, np.random.default_rng(1))
    # A uniform draw from 63 tokens equals the original 1 time in 63.
    assert 0.95 < np.mean(changed != tokens) < 1.0
    assert changed.dtype == tokens.dtype and changed.min() >= 1  # never the padding token


def test_token_substitution_changes_about_the_asked_fraction():
    tokens = np.ones((200, 100), np.int32)
    out = corruptions.substitute_tokens(tokens, 0.2, 1001, np.random.default_rng(0))
    assert abs(np.mean(out != tokens) - 0.2 * (1 - 1 / 1000)) < 0.01


def test_gaussian_noise_stays_in_pixel_range_and_shift_moves_pixels():
    images = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    noisy = corruptions.gaussian_noise(images, 0.5, np.random.default_rng(0))
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and not np.allclose(noisy, images)
    moved = corruptions.shift(images, 2)
    np.testing.assert_array_equal(moved[:, 2:, 2:], images[:, :6, :6])
    assert not moved[:, :2].any() and not moved[:, :, :2].any()
    assert not corruptions.shift(images, 8).any()
    with pytest.raises(ValueError, match="rate"):
        corruptions.substitute_tokens(images, 1.5, 10, np.random.default_rng(0))


# --------------------------------------------------------------------------------------- slices


def test_wilson_interval_known_values():
    # 95% Wilson interval of 8 successes in 10: (0.4902, 0.9433) (Wilson 1927; e.g. Newcombe
    # 1998, table I, method 3); of 0 in 10: (0, 0.2775).
    lo, hi = slices.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = slices.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


def test_slice_table_orders_numerically_and_the_worst_slice_needs_enough_items():
    values = np.array(["8-15"] * 30 + ["2-3"] * 30 + ["16-31"] * 5)
    correct = np.array([1] * 30 + [1] * 15 + [0] * 15 + [0] * 5, bool)
    rows = slices.slice_table(values, correct, np.zeros(len(values)))
    assert [r["slice"] for r in rows] == ["2-3", "8-15", "16-31"]
    assert [r["accuracy"] for r in rows] == [0.5, 1.0, 0.0]
    # 16-31 is the least accurate but has 5 < MIN_SLICE_ITEMS items: 2-3 is named worst.
    assert slices.worst_slice(rows)["slice"] == "2-3"


def test_item_nll_matches_log_softmax():
    logits = np.random.default_rng(0).normal(size=(7, 5)) * 10
    labels = np.arange(7) % 5
    expected = -np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))[np.arange(7), labels]
    np.testing.assert_allclose(slices.item_nll(logits, labels), expected, rtol=1e-6)


def test_hardest_items_are_the_highest_nll_first():
    assert list(slices.hardest(np.array([0.1, 3.0, 0.5, 3.0]), 3)) == [1, 3, 2]


def tiny_mqar(data_dir: str) -> data.Dataset:
    prefix = "data.mqar."
    params = {k[len(prefix) :]: v for k, v in tiny_overrides().items() if k.startswith(prefix)}
    return data.load("mqar", params, data_dir)  # 2 pairs, 2 queries, 16 tokens, vocab 32


def test_mqar_query_distance_and_order_are_read_from_the_tokens(data_dir):
    # Pairs 5->20, 6->21 at input positions 0..3; key 6 queried first, at position 9 (distance
    # 9 - 2 = 7), key 5 second, at position 12 (distance 12).
    inputs = np.array([[5, 20, 6, 21, 1, 2, 3, 4, 8, 6, 21, 4, 5, 20, 9, 9]], np.int32)
    builder = tiny_mqar(data_dir).builder
    attributes = builder.slice_attributes({"inputs": inputs}, np.array([0, 0]), np.array([9, 12]))
    assert list(attributes["query_key_distance"]) == ["4-7", "8-15"]
    assert list(attributes["query_order"]) == ["1", "2"]
    assert list(distance_buckets(np.array([1, 2, 3, 4, 31, 32]))) == [
        "1", "2-3", "2-3", "4-7", "16-31", "32-63"
    ]  # fmt: skip


def test_mqar_variants_sweep_the_number_of_pairs_within_what_fits(data_dir):
    variants = tiny_mqar(data_dir).builder.slice_variants()["num_kv_pairs"]
    # 8 pairs and 2 queries would need 2 * (8 + 2) = 20 > 16 + 1 tokens.
    assert list(variants) == ["1", "2", "4"]
    assert variants["1"] == {"num_kv_pairs": 1, "num_queries": 1}


def test_digit_groups_split_every_class_at_its_median_ink():
    images = np.random.default_rng(0).random((100, 8, 8, 1))
    labels = np.arange(100) % 5
    groups = ink_groups(images, labels)
    for label in range(5):
        assert groups[labels == label].sum() == 10  # half of each class's 20 images is heavy


# ------------------------------------------------------------------------- length extrapolation


@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_a_longer_clone_computes_the_same_function_unless_the_model_says_it_cannot(mixer):
    """Length generalization evaluates `model.clone(seq_len=2T)` with the trained parameters:
    that is only meaningful when, on the first T positions, it is the trained function."""
    config = mqar_mixers.get_config("attention")
    config.model.update(mixer=mixer, layer_pattern="", d_model=32, num_heads=2, d_ff=64)
    spec = type("Spec", (), {"vocab_size": 32, "seq_len": 16})()
    model = models.build_model(config.model, spec, jnp.float32)
    longer = model.clone(seq_len=32)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 32), 1, 32)
    params = model.init(jax.random.PRNGKey(1), tokens[:, :16], train=False)
    long_params = jax.eval_shape(lambda: longer.init(jax.random.PRNGKey(1), tokens, train=False))
    same_shapes = jax.tree.map(lambda a, b: a.shape == b.shape, params, long_params)
    if model.fixed_length_reason() is not None:
        return  # evaluation reports "not applicable" with this reason
    assert all(jax.tree.leaves(same_shapes)), "a longer clone needs other parameters"
    short = model.apply(params, tokens[:, :16], train=False)
    long = longer.apply(params, tokens, train=False)[:, :16]
    np.testing.assert_allclose(long, short, rtol=1e-5, atol=1e-5)


def test_hyena_and_learned_positions_declare_a_fixed_length():
    config = mqar_mixers.get_config("hyena")
    spec = type("Spec", (), {"vocab_size": 32, "seq_len": 16})()
    assert "hyena" in models.build_model(config.model, spec, jnp.float32).fixed_length_reason()
    config = mqar_mixers.get_config("attention")
    config.model.positional = "learned"
    reason = models.build_model(config.model, spec, jnp.float32).fixed_length_reason()
    assert "learned positional" in reason


# ------------------------------------------------------------------------------- end to end


def evaluate(data_dir: str, workdir, *args: str) -> subprocess.CompletedProcess:
    return run_module(data_dir, "launch.evaluate", f"--workdir={workdir}", *args)


@pytest.fixture(scope="module")
def digits_run(data_dir, tmp_path_factory):
    """A digits MLP trained to ~0.9 accuracy with every suite, as launch.train runs them (the
    generation suite says why it does not apply)."""
    workdir = tmp_path_factory.mktemp("digits") / "run"
    result = run_train(
        data_dir,
        workdir,
        "--config.train.steps=120",
        "--config.eval.every=120",
        "--config.checkpoint.every=120",
        "--config.eval.suites=calibration,robustness,slices,groups,generation",
        base=["--config=experiments/digits_mlp.py"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_a_completed_run_writes_every_suite_plots_and_a_model_card(digits_run):
    eval_dir = digits_run / "eval"
    for name in ("summary", "calibration", "robustness", "slices", "groups"):
        assert (eval_dir / f"{name}.json").exists(), name
    for png in ("reliability.png", "robustness.png"):
        assert (eval_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((eval_dir / "summary.json").read_text())
    final = [json.loads(line) for line in (digits_run / "metrics.jsonl").open()][-1]
    # The suites judge the same parameters the run's own final evaluation did.
    assert summary["accuracy"] == pytest.approx(final["eval/accuracy"], abs=1e-6)
    assert summary["accuracy"] > 0.8
    lo, hi = summary["accuracy_ci"]
    assert lo < summary["accuracy"] < hi
    assert {"calibration/ece", "groups/accuracy_gap", "slices/worst_accuracy/class"} <= set(
        summary["headline"]
    )
    assert summary["not_applicable"] == {
        "robustness/length": "images have no sequence length",
        "generation": "a 'mlp' model does not generate: only sequence models (model.name=lm) do",
    }
    assert not (eval_dir / "generations.md").exists()
    card = (digits_run / "model_card.md").read_text()
    for section in (
        "## Intended use",
        "## Architecture",
        "## Training data",
        "## Evaluation",
        "## Calibration",
        "## Robustness",
        "## Slices",
        "## Group gaps",
        "## Generation",
        "## Privacy",
        "## Compute",
        "## Known limitations",
        "## License",
    ):
        assert section in card, section
    assert "light_ink" in card and "heavy_ink" in card


def test_robustness_curves_fall_with_corruption(digits_run):
    robustness = json.loads((digits_run / "eval" / "robustness.json").read_text())
    noise = [p["accuracy"] for p in robustness["curves"]["gaussian_noise"]]
    assert noise[0] > noise[-1] + 0.05, noise  # stddev 0.4 on [0, 1] pixels hurts
    assert [p["x"] for p in robustness["curves"]["shift"]] == [0, 1, 2]


def test_groups_report_each_groups_accuracy_and_the_gap(digits_run):
    groups = json.loads((digits_run / "eval" / "groups.json").read_text())
    rows = {r["group"]: r for r in groups["groups"]}
    assert set(rows) == {"light_ink", "heavy_ink"}
    assert sum(r["items"] for r in rows.values()) == 300
    gap = abs(rows["light_ink"]["accuracy"] - rows["heavy_ink"]["accuracy"])
    assert groups["headline"]["accuracy_gap"] == pytest.approx(gap)


def test_launch_evaluate_reproduces_the_suites_and_checks_its_input(data_dir, digits_run):
    eval_dir = digits_run / "eval"
    before = {name: (eval_dir / name).read_text() for name in ("calibration.json", "groups.json")}
    result = evaluate(data_dir, digits_run, "--suite=calibration,groups")
    assert result.returncode == 0, result.stderr[-3000:]
    for name, text in before.items():
        assert (eval_dir / name).read_text() == text, f"{name} differs on a rerun"
    bad = evaluate(data_dir, digits_run, "--suite=calibration,fairness")
    assert bad.returncode == 2 and "unknown evaluation suite 'fairness'" in bad.stderr
    assert "calibration, generation, groups, robustness, slices" in bad.stderr
    missing = evaluate(data_dir, digits_run.parent / "nope")
    assert missing.returncode == 2 and "not a run directory" in missing.stderr


def test_a_run_recorded_before_a_config_key_existed_is_not_evaluated(
    data_dir, digits_run, tmp_path
):
    """Today's default for the missing key need not be what the run trained with."""
    recorded = json.loads((digits_run / "config.json").read_text())
    del recorded["data"]["mqar"]["answers"]
    old_run = tmp_path / "old_run"
    old_run.mkdir()
    (old_run / "config.json").write_text(json.dumps(recorded))
    result = evaluate(data_dir, old_run)
    assert result.returncode == 2
    assert "predates config key data.mqar.answers" in result.stderr


def test_a_run_without_a_checkpoint_is_refused_and_left_as_it_was(data_dir, digits_run, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(digits_run / "config.json", untrained / "config.json")
    result = evaluate(data_dir, untrained)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: run {str(untrained)!r} has no checkpoint to evaluate"
    ]
    assert [p.name for p in untrained.iterdir()] == ["config.json"]


def test_an_unknown_suite_fails_before_training(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run", "--config.eval.suites=calibraton")
    assert result.returncode == 2
    assert "unknown evaluation suite 'calibraton'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_sequence_suites_on_mqar(data_dir, tmp_path):
    """MQAR: slices by query-key distance and by number of pairs (evaluation variants), length
    generalization at 2x and 4x for attention, "not applicable" for groups, and generation."""
    result = run_train(
        data_dir,
        tmp_path / "run",
        "--config.eval.suites=robustness,slices,groups,generation",
        "--config.eval.corruption_rates=(0.3,)",
        *GENERATION,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    eval_dir = tmp_path / "run" / "eval"
    robustness = json.loads((eval_dir / "robustness.json").read_text())
    assert [p["x"] for p in robustness["curves"]["length"]] == [1, 2, 4]
    assert [p["x"] for p in robustness["curves"]["token_substitution"]] == [0, 0.3]
    sliced = json.loads((eval_dir / "slices.json").read_text())
    assert [r["slice"] for r in sliced["tables"]["num_kv_pairs"]] == ["1", "2", "4"]
    assert sum(r["items"] for r in sliced["tables"]["query_key_distance"]) == 64 * 2
    assert "[" in (eval_dir / "hardest.md").read_text()  # the scored position is marked
    groups = json.loads((eval_dir / "groups.json").read_text())
    assert "carries no group attribute" in groups["not_applicable"]
    check_generation_suite(data_dir, tmp_path / "run")


GENERATION = [
    "--config.eval.generation.prompts=3",
    "--config.eval.generation.prompt_tokens=8",
    "--config.eval.generation.new_tokens=6",
]


def check_generation_suite(data_dir: str, run) -> None:
    """Greedy continuations of the first three evaluation examples' first 8 tokens, shown as
    ids (MQAR's tokens are not text) beside what followed in the data, and what decoding costs,
    also among the headline numbers a study reports per arm."""
    eval_dir = run / "eval"
    result = json.loads((eval_dir / "generation.json").read_text())
    config = run_config(str(run))
    dataset = data.load("mqar", config.data.mqar.to_dict(), data_dir)
    source = dataset.source(dataset.spec.eval_split)
    examples = [np.asarray(source[i]["inputs"]) for i in range(3)]
    assert [c["prompt"] for c in result["continuations"]] == [e[:8].tolist() for e in examples]
    assert all(len(c["tokens"]) == 6 for c in result["continuations"])
    # One attention layer (d_model 32) caches, for each of the 8 + 6 - 1 positions fed, a key
    # and a value (32 float32 each) and the slot's position (an int32): 260 bytes a position;
    # its short convolution (kernel 4) keeps the last 3 inputs: 3 x 32 float32.
    state_bytes = 13 * 260 + 3 * 32 * 4
    assert result["headline"]["state_bytes_per_sequence"] == state_bytes
    assert len(result["seconds_per_token_timed"]) == 3
    assert result["headline"]["seconds_per_token"] == min(result["seconds_per_token_timed"]) > 0
    shown = (eval_dir / "generations.md").read_text()
    for example, continuation in zip(examples, result["continuations"], strict=True):
        for tokens in (example[:8], continuation["tokens"], example[8:14]):
            assert "\n" + " ".join(map(str, tokens)) + "\n" in shown
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["headline"]["generation/state_bytes_per_sequence"] == state_bytes
    assert "## Generation" in (run / "model_card.md").read_text()


def test_generation_settings_below_one_are_refused_before_anything_runs():
    config = mqar_mixers.get_config()
    config.eval.generation.new_tokens = 0
    with pytest.raises(UsageError, match=r"^eval.generation.new_tokens must be >= 1, got 0$"):
        assembly.check_names(config)


# ---------------------------------------------------------------------------------- model card


def write_run(path, *, leak: bool) -> None:
    """A run directory as launch.train and launch.evaluate leave it, reduced to what the card
    reads."""
    (path / "eval").mkdir(parents=True)
    overlap = {
        "leak": leak,
        "eval": {
            "test": {
                "examples": 64,
                "exact": {"count": 3 if leak else 0},
                "near": {"count": 1 if leak else 0},
            }
        },
        "train_duplicates": {"count": 0},
    }
    fingerprint = {"content_hash": "sha256:abc", "data_sheet": {"source": "s"}, "overlap": overlap}
    config = {"model": {"name": "lm", "mixer": "attention"}, "data": {"name": "mqar"}}
    manifest = {"status": "completed", "num_params": 1234, "datasets": {"mqar": fingerprint}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "metrics.jsonl").write_text(json.dumps({"step": 10, "eval/accuracy": 0.5}) + "\n")
    summary = {"step": 10, "split": "test", "items": 128, "accuracy": 0.5, "suites": []}
    (path / "eval" / "summary.json").write_text(json.dumps(summary))


def test_a_leaking_dataset_is_named_in_the_model_card(tmp_path):
    write_run(tmp_path / "leaky", leak=True)
    card = model_card.render(str(tmp_path / "leaky"))
    assert "**LEAK" in card and "3 of 64 exact copies, 1 near-duplicates" in card
    assert "evaluation data leaks from train in mqar" in card
    write_run(tmp_path / "clean", leak=False)
    clean = model_card.render(str(tmp_path / "clean"))
    assert "LEAK" not in clean and "no evaluation example found in train" in clean


def test_a_study_card_shows_the_arms_seed_intervals(tmp_path):
    write_run(tmp_path / "run", leak=False)
    arm = {"study": "s", "arm": "a", "seeds": 3, "stats": {"eval/accuracy": {
        "mean": 0.5, "ci": [0.4, 0.6], "n": 3}}}  # fmt: skip
    card = model_card.render(str(tmp_path / "run"), arm)
    assert "in study `s` (arm `a`)" in card
    assert "| eval/accuracy | 0.5 | [0.4, 0.6] | 3 |" in card
    assert "Trained without differential privacy" in card
