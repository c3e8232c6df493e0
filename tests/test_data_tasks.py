"""Each synthetic task's defining property, checked on every example of small prepared splits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import data
from tests.test_data import small


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


def examples(name: str, params: dict[str, Any], data_dir: str) -> Iterator[tuple[str, dict]]:
    """(split, example) for every stored example, in order."""
    ds = data.load(name, params, data_dir)
    for split in sorted(ds.spec.splits):
        source = ds.source(split)
        for i in range(len(source)):
            yield split, {k: np.asarray(v) for k, v in source[i].items()}


def stream(example: dict[str, np.ndarray]) -> np.ndarray:
    """The seq_len + 1 tokens an example was cut from."""
    return np.append(example["inputs"], example["targets"][-1])


def scored_tokens(example: dict[str, np.ndarray]) -> np.ndarray:
    """For each of the seq_len + 1 tokens, whether the model is scored on predicting it."""
    return np.append(False, example["loss_mask"] == 1)


# --- mqar (Zoology) -------------------------------------------------------------------------


def test_mqar_queries_each_key_once_after_the_pairs_with_power_law_gaps() -> None:
    from data.mqar import MqarConfig, gap_probabilities, make_example

    def slot_counts(power_a: float) -> np.ndarray:
        config = MqarConfig.from_params(
            {"vocab_size": 64, "seq_len": 41, "num_kv_pairs": 4, "num_queries": 1,
             "power_a": power_a}
        )  # fmt: skip
        rng = np.random.default_rng(0)
        counts = np.zeros(17, dtype=int)  # (42 - 8) // 2 slots
        for _ in range(2000):
            ex = make_example(rng, config)
            tokens, keys = stream(ex), stream(ex)[0:8:2]
            (position,) = np.flatnonzero(ex["loss_mask"])
            assert position >= 8 and (position - 8) % 2 == 0
            # The queried key occurs exactly twice: in its pair and as the query.
            assert np.count_nonzero(tokens == tokens[position]) == 2
            assert tokens[position] in keys
            assert not np.isin(np.delete(tokens[8:], position - 8), keys).any()
            counts[(position - 8) // 2] += 1
        return counts

    short = slot_counts(0.01)
    expected = gap_probabilities(17, 0.01) * 2000
    assert short[0] > 3 * short[-1]  # short gaps far more likely
    np.testing.assert_allclose(short, expected, rtol=0.25, atol=15)
    uniform = slot_counts(1.0)
    np.testing.assert_allclose(uniform, 2000 / 17, rtol=0.35)


def mqar_examples(**params: str) -> list[dict[str, np.ndarray]]:
    """50 small mqar examples, each from its own generator (hiding draws the filler after an
    example's other draws, so only per-example generators keep two settings aligned)."""
    from data.mqar import MqarConfig, make_example

    config = MqarConfig.from_params({**small("mqar"), **params})
    return [make_example(np.random.default_rng(i), config) for i in range(50)]


def mqar_num_pairs() -> int:
    from data.mqar import MqarConfig

    return MqarConfig.from_params(small("mqar")).num_kv_pairs


def test_mqar_pad_filler_keeps_the_pairs_and_queries_and_zeroes_everything_else() -> None:
    num_pair_tokens = 2 * mqar_num_pairs()
    for random, pad in zip(
        mqar_examples(filler="random", answers="shown"),
        mqar_examples(filler="pad", answers="shown"),
        strict=True,
    ):
        np.testing.assert_array_equal(pad["loss_mask"], random["loss_mask"])
        tokens, random_tokens = stream(pad), stream(random)
        kept = scored_tokens(pad) | np.roll(scored_tokens(pad), -1)  # queries and their values
        kept[:num_pair_tokens] = True
        np.testing.assert_array_equal(tokens[kept], random_tokens[kept])
        assert (tokens[~kept] == 0).all()
        assert (random_tokens[~kept] != 0).all()


def test_mqar_hidden_answers_are_targets_but_never_inputs() -> None:
    num_pairs = mqar_num_pairs()
    for filler in ("random", "pad"):
        matches = answers = 0
        shown_examples = mqar_examples(answers="shown", filler=filler)
        hidden_examples = mqar_examples(answers="hidden", filler=filler)
        for shown, hidden in zip(shown_examples, hidden_examples, strict=True):
            for key in ("targets", "loss_mask"):
                np.testing.assert_array_equal(hidden[key], shown[key])
            scored = np.flatnonzero(hidden["loss_mask"])
            answer_inputs = scored[scored + 1 < len(hidden["inputs"])] + 1
            elsewhere = np.setdiff1d(np.arange(len(hidden["inputs"])), answer_inputs)
            np.testing.assert_array_equal(hidden["inputs"][elsewhere], shown["inputs"][elsewhere])
            # Where the value was, filler: never a key, and the value itself only by chance.
            keys = shown["inputs"][0 : 2 * num_pairs : 2]
            assert not np.isin(hidden["inputs"][answer_inputs], keys).any()
            if filler == "pad":
                assert (hidden["inputs"][answer_inputs] == 0).all()
            answers += len(answer_inputs)
            matches += np.count_nonzero(
                hidden["inputs"][answer_inputs] == shown["inputs"][answer_inputs]
            )
        # Random filler: 1 draw in 27 (vocab 32 less token 0 and 4 keys) equals the value.
        assert matches <= 0.15 * answers


def test_mqar_rejects_a_non_positive_power(data_dir: str) -> None:
    with pytest.raises(data.DataConfigError, match="power_a"):
        data.load("mqar", small("mqar", power_a=0.0), data_dir)


# --- induction_head -------------------------------------------------------------------------


def test_induction_head_answers_with_the_token_after_the_first_trigger(data_dir: str) -> None:
    params = small("induction_head")
    trigger, seq_len = params["vocab_size"] - 1, params["seq_len"]
    for _, ex in examples("induction_head", params, data_dir):
        assert np.flatnonzero(ex["loss_mask"]).tolist() == [seq_len - 1]
        triggers = np.flatnonzero(ex["inputs"] == trigger)
        assert len(triggers) == 2 and triggers[1] == seq_len - 1
        assert ex["inputs"][triggers[0] + 1] != trigger
        assert ex["targets"][-1] == ex["inputs"][triggers[0] + 1]


# --- in_context_recall, noisy_recall ----------------------------------------------------------


def recall_check(ex: dict[str, np.ndarray], num_keys: int, num_values: int) -> int:
    """Pairs end the stream; a value is scored iff its key was shown before. Returns #noise."""
    tokens, scored = stream(ex), scored_tokens(ex)
    if len(tokens) % 2:  # a lone value token first, never scored
        assert num_keys <= tokens[0] < num_keys + num_values and not scored[0]
        tokens, scored = tokens[1:], scored[1:]
    shown: dict[int, int] = {}
    noise = 0
    for (k, v), (k_scored, v_scored) in zip(
        tokens.reshape(-1, 2), scored.reshape(-1, 2), strict=True
    ):
        assert not k_scored
        if k >= num_keys + num_values:  # a noise pair: two noise tokens, never scored
            assert v >= num_keys + num_values and not v_scored
            noise += 1
            continue
        assert k < num_keys and num_keys <= v < num_keys + num_values
        assert v_scored == (k in shown)
        assert shown.setdefault(k, v) == v  # a key keeps its value
    assert scored[-1]  # the final query
    return noise


@pytest.mark.parametrize("seq_len", [32, 33])
def test_in_context_recall_scores_exactly_the_recalled_values(seq_len: int, data_dir: str) -> None:
    params = small("in_context_recall", seq_len=seq_len)
    for _, ex in examples("in_context_recall", params, data_dir):
        assert recall_check(ex, num_keys=8, num_values=8) == 0


def test_noisy_recall_never_scores_noise(data_dir: str) -> None:
    params = small("noisy_recall")  # vocab 32 = 8 keys + 8 values + 16 noise tokens
    noise = [recall_check(ex, 8, 8) for _, ex in examples("noisy_recall", params, data_dir)]
    pairs = (params["seq_len"] + 1) // 2 - 1  # before the final query
    assert 0.3 < np.mean(noise) / pairs < 0.5  # frac_noise = 0.4 (one pair is always real)


# --- fuzzy_recall ---------------------------------------------------------------------------


def fuzzy_check(tokens: np.ndarray, scored: np.ndarray, vocab_size: int, k: int, v: int) -> set:
    """Left padding, then key/value motif pairs; a value is scored iff its key motif was shown
    before, and the last pair is such a query. Returns the key motif sizes seen."""
    pad, value_lo = vocab_size - 1, (vocab_size - 1) // 2
    assert len(tokens) == len(scored) and scored[-1]
    start = np.argmax(tokens != pad)
    assert (tokens[:start] == pad).all() and not scored[:start].any()
    assert pad not in tokens[start:]
    # Key and value vocabularies alternate, so maximal runs are the motifs.
    is_key = tokens[start:] < value_lo
    cuts = 1 + np.flatnonzero(is_key[1:] != is_key[:-1])  # relative to start
    runs = np.split(np.arange(start, len(tokens)), cuts)
    assert len(runs) % 2 == 0 and tokens[runs[0][0]] < value_lo
    shown: dict[tuple, tuple] = {}
    for key_at, value_at in zip(runs[0::2], runs[1::2], strict=True):
        key, value = tuple(tokens[key_at]), tuple(tokens[value_at])
        assert len(set(key)) == len(key) <= k and len(set(value)) == len(value) <= v
        assert not scored[key_at].any()
        assert (scored[value_at] == (key in shown)).all()
        assert shown.setdefault(key, value) == value
    assert scored[runs[-1]].all()  # the final probe: shown before, so answerable
    return {len(key_at) for key_at in runs[0::2]}


def test_fuzzy_recall_scores_the_values_of_repeated_key_motifs(data_dir: str) -> None:
    params = small("fuzzy_recall")
    sizes: dict[str, set[int]] = {"train": set(), "test": set()}
    for split, ex in examples("fuzzy_recall", params, data_dir):
        sizes[split] |= fuzzy_check(stream(ex), scored_tokens(ex), 16, 3, 3)
    assert sizes == {"train": {1, 2, 3}, "test": {3}}  # test keys are full-size motifs


@pytest.mark.parametrize(
    ("vocab_size", "seq_len", "k", "v"), [(16, 13, 3, 3), (9, 24, 2, 1), (40, 64, 4, 2)]
)
def test_fuzzy_recall_final_query_is_always_answerable(
    vocab_size: int, seq_len: int, k: int, v: int
) -> None:
    from data import mad

    rng = np.random.default_rng(0)
    for i in range(300):
        tokens, scored = mad.fuzzy_recall(
            rng, vocab_size=vocab_size, seq_len=seq_len, k_motif_size=k, v_motif_size=v,
            is_training=i % 2 == 0,
        )  # fmt: skip
        assert len(tokens) == seq_len + 1
        fuzzy_check(tokens, scored, vocab_size, k, v)


def test_fuzzy_recall_needs_room_for_the_probe(data_dir: str) -> None:
    with pytest.raises(data.DataConfigError, match="seq_len"):
        data.load("fuzzy_recall", small("fuzzy_recall", seq_len=12), data_dir)
    with pytest.raises(data.DataConfigError, match="k_motif_size"):
        data.load("fuzzy_recall", small("fuzzy_recall", vocab_size=6), data_dir)


# --- selective_copying, compression ---------------------------------------------------------


def test_selective_copying_targets_are_the_marked_tokens_in_order(data_dir: str) -> None:
    params = small("selective_copying")  # vocab 16: content [0, 14), blank 14, copy 15
    n, blank, copy = params["num_tokens_to_copy"], 14, 15
    for _, ex in examples("selective_copying", params, data_dir):
        tokens, mask = stream(ex), ex["loss_mask"] == 1
        (copy_at,) = np.flatnonzero(tokens == copy)
        content = tokens[:copy_at][tokens[:copy_at] != blank]
        assert len(content) == n and np.count_nonzero(tokens[:copy_at] == blank) > 0
        assert np.flatnonzero(mask).tolist() == list(range(copy_at, copy_at + n))
        np.testing.assert_array_equal(ex["targets"][mask], content)


def test_compression_reproduces_the_sequence_after_the_separator(data_dir: str) -> None:
    params = small("compression")
    half, separator = params["seq_len"] // 2, 15
    for _, ex in examples("compression", params, data_dir):
        mask = ex["loss_mask"] == 1
        assert ex["inputs"][half] == separator and separator not in ex["inputs"][:half]
        assert np.flatnonzero(mask).tolist() == list(range(half, 2 * half))
        np.testing.assert_array_equal(ex["targets"][mask], ex["inputs"][:half])


# --- memorization ---------------------------------------------------------------------------


def test_memorization_map_is_one_bijection_shared_by_all_examples(data_dir: str) -> None:
    params = small("memorization")  # vocab 32: keys [0, 16), values [16, 32)
    value_of: dict[int, int] = {}
    for _, ex in examples("memorization", params, data_dir):
        mask = ex["loss_mask"] == 1
        keys, values = ex["inputs"][mask], ex["targets"][mask]
        assert len(keys) == (params["seq_len"] + 1) // 2 and len(set(keys)) == len(keys)
        assert (keys < 16).all() and (values >= 16).all()
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            assert value_of.setdefault(k, v) == v
    assert sorted(value_of) == list(range(16))  # every key seen in 80 examples
    assert sorted(value_of.values()) == list(range(16, 32))
    other = data.load("memorization", small("memorization", generation_seed=1), data_dir)
    ex = other.source("train")[0]
    mask = np.asarray(ex["loss_mask"]) == 1
    moved = [value_of[k] != v for k, v in zip(ex["inputs"][mask], ex["targets"][mask], strict=True)]
    assert any(moved)  # another seed, another map


# --- modular_arithmetic ---------------------------------------------------------------------

OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * pow(b, -1, p)) % p,
}


@pytest.mark.parametrize("operation", sorted(OPS))
def test_modular_arithmetic_splits_partition_the_table(operation: str, data_dir: str) -> None:
    p, fraction = 11, 0.3
    params = {"prime": p, "operation": operation, "train_fraction": fraction}
    seen: dict[str, set[tuple[int, int]]] = {"train": set(), "test": set()}
    for split, ex in examples("modular_arithmetic", params, data_dir):
        a, op, b, eq = ex["inputs"].tolist()
        assert (op, eq) == (p, p + 1)
        assert ex["loss_mask"].tolist() == [0, 0, 0, 1]
        assert ex["targets"][-1] == OPS[operation](a, b, p)
        seen[split].add((a, b))
    assert not seen["train"] & seen["test"]  # no pair in both splits
    table = {(a, b) for a in range(p) for b in range(p) if operation != "div" or b}
    assert seen["train"] | seen["test"] == table
    assert len(seen["train"]) == round(fraction * len(table))
    spec = data.load("modular_arithmetic", params, data_dir).spec
    assert (spec.vocab_size, spec.seq_len) == (p + 2, 4)


def test_modular_arithmetic_rejects_bad_params(data_dir: str) -> None:
    for params, match in [
        ({"prime": 12}, "prime"),
        ({"operation": "pow"}, "add, sub, mul, div"),
        ({"operation": 3}, "operation"),
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"prime": 2, "train_fraction": 0.1}, "train_fraction"),
    ]:
        with pytest.raises(data.DataConfigError, match=match):
            data.load("modular_arithmetic", params, data_dir)


# --- all generated tasks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("induction_head", {"seq_len": 2}, "seq_len"),
        ("in_context_recall", {"vocab_size": 3}, "vocab_size"),
        ("noisy_recall", {"frac_noise": 1.0}, "frac_noise"),
        ("noisy_recall", {"noise_vocab_size": 30}, "noise_vocab_size"),
        ("selective_copying", {"seq_len": 10, "num_tokens_to_copy": 5}, "seq_len"),
        ("compression", {"seq_len": 15}, "even"),
        ("memorization", {"vocab_size": 16, "seq_len": 32}, "distinct keys"),
        ("in_context_recall", {"train_examples": 0}, "example counts"),
    ],
)
def test_impossible_task_params_name_the_problem(
    name: str, params: dict[str, Any], match: str, tmp_path: Path
) -> None:
    with pytest.raises(data.DataConfigError, match=match):
        data.load(name, params, str(tmp_path))
    assert not Path(tmp_path, name).exists()  # refused before anything was written


@pytest.mark.parametrize(
    "name", ["induction_head", "in_context_recall", "noisy_recall", "fuzzy_recall",
             "selective_copying", "compression", "memorization"],
)  # fmt: skip
def test_generated_tasks_are_reproducible_and_seeded(name: str, tmp_path: Path) -> None:
    a = data.load(name, small(name), str(tmp_path / "a")).fingerprint
    b = data.load(name, small(name), str(tmp_path / "b")).fingerprint
    c = data.load(name, small(name, generation_seed=1), str(tmp_path / "a")).fingerprint
    assert a == b and a["content_hash"] != c["content_hash"]
