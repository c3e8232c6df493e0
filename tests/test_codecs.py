"""How a run's tokens read as text (generation/codecs.py): what its dataset declares (the
tokenizer its data were made with), else a converted checkpoint's tokenizer.json in the run, else
ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import data
from data.text_corpus import TOKENIZER_FILE
from data.tokenizer import EOD_TOKEN, ByteLevelBPE, ByteTokenizer
from experiments.base import base_config
from generation.codecs import RunTokenizer, text_codec
from runtime.errors import UsageError
from tests.test_text_corpus import hand_made_bpe

CORPUS = str(Path(__file__).parent / "corpus" / "*")


def run_config(name: str, **params):
    """A run's config on dataset `name` with `params`."""
    config = base_config()
    config.data.name = name
    config.data[name].update(params)
    return config


def test_bytes_read_as_utf8_with_the_end_of_document_token_shown():
    byte = ByteTokenizer()
    text = "déf f(x):\n    return x"
    [tokens] = byte.encode([text])
    assert byte.decode(tokens.tolist()) == text
    assert byte.decode([104, 105, byte.eod_id, 33]) == f"hi{EOD_TOKEN}!"
    # A continuation cut inside a character (é is two bytes) is not UTF-8: U+FFFD stands for it.
    assert byte.decode(list("é".encode())[:1]) == "\ufffd"


def test_each_dataset_declares_whether_its_tokens_are_text(tmp_path):
    """No registration by dataset name: the builder says it (synthetic tasks and images: ids)."""
    for name in ("mqar", "induction_head", "digits"):
        assert data.text_tokenizer(name, data_dir=str(tmp_path)) is None, name
        assert text_codec(run_config(name), str(tmp_path)) is None, name
    for name, params in (("pydoc_text", {}), ("python_stdlib", {"modules": "json"})):
        codec = text_codec(run_config(name, **params), str(tmp_path))
        assert isinstance(codec, ByteTokenizer), name
    assert not any(tmp_path.iterdir())  # nothing was prepared to say it


def test_a_bpe_trained_at_preparation_is_read_from_the_prepared_data(tmp_path):
    params = {"paths": CORPUS, "seq_len": 16, "tokenizer": "bpe", "vocab_size": 300}
    config = run_config("text_files", **params)
    config.data.dir = str(tmp_path)
    with pytest.raises(
        UsageError, match=r"its BPE is trained when the data are prepared.*datacheck"
    ):
        text_codec(config, str(tmp_path))

    prepared = data.load("text_files", params, str(tmp_path))
    codec = text_codec(config, str(tmp_path))
    assert isinstance(codec, ByteLevelBPE)
    saved = Path(prepared.builder.data_path) / TOKENIZER_FILE
    assert codec.to_json() == Tokenizer.from_file(str(saved)).to_str()
    text = "Notes on the guide:\n  every line counts."
    [tokens] = codec.encode([text])
    assert len(tokens) < len(text.encode())  # merges were used
    assert codec.decode(tokens.tolist()) == text
    assert codec.decode([*tokens.tolist(), codec.eod_id]) == text + EOD_TOKEN


def test_a_given_tokenizer_json_needs_no_preparation(tmp_path):
    hand_made_bpe(tmp_path / "tokenizer.json")
    params = {"paths": CORPUS, "seq_len": 16, "tokenizer": str(tmp_path / "tokenizer.json")}
    codec = data.text_tokenizer("text_files", params, str(tmp_path / "data"))
    assert codec.encode(["abab"])[0].tolist() == [257, 257]  # the 'ab' merge
    assert codec.decode([257, 257, 0]) == f"abab{EOD_TOKEN}"
    assert not (tmp_path / "data").exists()


def hub_tokenizer(path: Path) -> None:
    """A word-level tokenizer.json of 6 tokens that adds a beginning-of-sequence token, as many
    Hugging Face checkpoints' do."""
    vocab = {"<s>": 0, "</s>": 1, "[UNK]": 2, "hello": 3, "world": 4, "again": 5}
    hf = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    hf.add_special_tokens(["<s>", "</s>"])
    hf.save(str(path))


def test_a_converted_run_reads_text_with_its_own_tokenizer_json(tmp_path):
    """induction_head's tokens are ids, but a run converted from a checkpoint with a
    tokenizer.json has it beside itself: prompts are encoded as transformers would (the
    beginning-of-sequence token included)."""
    config = run_config("induction_head", vocab_size=6)
    hub_tokenizer(tmp_path / "tokenizer.json")
    codec = text_codec(config, str(tmp_path))
    assert isinstance(codec, RunTokenizer)
    assert codec.encode(["hello world"])[0].tolist() == [0, 3, 4]
    assert codec.decode([4, 5, 1]) == "world again </s>"

    # The dataset's own declaration comes first: its tokens are what the run was trained on.
    assert isinstance(text_codec(run_config("pydoc_text"), str(tmp_path)), ByteTokenizer)

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"tokenizer.json is not a tokenizer.json that tokenizers"):
        text_codec(config, str(tmp_path))
