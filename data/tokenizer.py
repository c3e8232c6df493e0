"""Tokenizers of the text corpora: UTF-8 bytes, or a byte-level BPE (Hugging Face `tokenizers`).

Every tokenizer has an end-of-document token (EOD) that the packer writes after each document, and
states how many bytes of text each token stands for (`token_bytes`): what bits per byte divides
by. For a byte-level BPE a token's bytes are exact: every character of a byte-level token is one
byte (GPT-2's byte-to-character map). EOD counts as one byte, the document's end mark, so that a
byte model's bits per byte equals its bits per token and every tokenizer is charged for the same
bytes of the same text. The packer checks the counts against each document's UTF-8 length.

- `byte`: tokens 0..255 are the bytes, 256 is EOD (vocab 257).
- `bpe`: trained at preparation on the train split (`train_bpe`), GPT-2's pre-tokenisation, EOD
  `<|endoftext|>` at id 0; deterministic, so the same documents give the same tokenizer.json.
- a path to a tokenizer.json: a byte-level BPE with one of `EOD_TOKENS` (`load_file`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from data.config import DataConfigError

EOD_TOKEN = "<|endoftext|>"
# End-of-document tokens recognised in a tokenizer.json brought by the user, in this order.
EOD_TOKENS = (EOD_TOKEN, "<|end_of_text|>", "</s>", "<eos>")
BYTE_VOCAB = 257  # 256 bytes + EOD
MIN_BPE_VOCAB = 258  # the byte alphabet, EOD and at least one merge


class TextTokenizer(abc.ABC):
    vocab_size: int
    eod_id: int

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's int32 token ids (no EOD)."""

    @abc.abstractmethod
    def decode(self, tokens: Sequence[int]) -> str:
        """The text that token ids stand for, EOD as its token's text (`<|endoftext|>` for
        ours). Ids the tokenizer does not have are left out, and bytes that are not UTF-8 (text
        cut inside a character) read as U+FFFD: a model's continuation need not be text."""

    @abc.abstractmethod
    def token_bytes(self) -> np.ndarray:
        """int32 [vocab_size]: the UTF-8 bytes each token stands for (EOD: 1)."""

    def to_json(self) -> str | None:
        """The tokenizer.json to keep beside the data; None when there is nothing to keep."""
        return None


class ByteTokenizer(TextTokenizer):
    vocab_size = BYTE_VOCAB
    eod_id = 256

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int32) for t in texts]

    def decode(self, tokens: Sequence[int]) -> str:
        documents, current = [], bytearray()
        for token in tokens:
            if token == self.eod_id:
                documents.append(current)
                current = bytearray()
            elif 0 <= token < 256:
                current.append(token)
        documents.append(current)
        return EOD_TOKEN.join(d.decode("utf-8", errors="replace") for d in documents)

    def token_bytes(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int32)


class ByteLevelBPE(TextTokenizer):
    """A Hugging Face byte-level BPE tokenizer with an EOD token. `vocab_size` may exceed the
    tokenizer's own (a BPE trained on little text stops short of it): the ids above are unused."""

    def __init__(
        self, hf: tokenizers.Tokenizer, vocab_size: int | None = None, where: str = "tokenizer"
    ):
        self.hf = hf
        # Ids need not be contiguous (added tokens may sit above the model's vocabulary).
        own = max(hf.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        self.vocab_size = own if vocab_size is None else vocab_size
        if own > self.vocab_size:
            raise DataConfigError(f"{where}: {own} tokens, more than vocab_size {self.vocab_size}")
        ids = [hf.token_to_id(t) for t in EOD_TOKENS]
        found = [i for i in ids if i is not None]
        if not found:
            raise DataConfigError(
                f"{where}: no end-of-document token; it needs one of {', '.join(EOD_TOKENS)}"
            )
        self.eod_id = found[0]
        # Special tokens in a document's text are encoded as the text they are, never as
        # themselves: EOD appears only where the packer puts it.
        hf.encode_special_tokens = True
        self._token_bytes = _byte_level_lengths(hf, self.vocab_size, self.eod_id, where)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self.hf.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, tokens: Sequence[int]) -> str:
        return self.hf.decode(list(tokens), skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        return self._token_bytes

    def to_json(self) -> str:
        return self.hf.to_str()


def _byte_level_lengths(
    hf: tokenizers.Tokenizer, vocab_size: int, eod_id: int, where: str
) -> np.ndarray:
    """Bytes per token id: one per character of a vocabulary token (each is a byte under the
    byte-level map), an added token's UTF-8 length, 0 for special tokens and unused ids."""
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    added = hf.get_added_tokens_decoder()
    lengths = np.zeros(vocab_size, dtype=np.int32)
    for token, index in hf.get_vocab(with_added_tokens=False).items():
        if index in added:
            continue  # its text is literal, not byte-level: below
        if not set(token) <= alphabet:
            raise DataConfigError(
                f"{where}: token {token!r} is not byte-level (bits per byte needs the bytes of "
                "every token: use a byte-level BPE tokenizer.json)"
            )
        lengths[index] = len(token)
    for index, token in added.items():
        lengths[index] = 0 if token.special else len(token.content.encode("utf-8"))
    lengths[eod_id] = 1
    return lengths


def train_bpe(texts: Iterable[str], vocab_size: int) -> ByteLevelBPE:
    """A byte-level BPE of `vocab_size` tokens (alphabet and EOD included) trained on `texts`."""
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return ByteLevelBPE(hf, vocab_size, "the trained BPE")


def load_file(path: str | Path) -> ByteLevelBPE:
    """A tokenizer.json, checked: a BPE model, a byte-level decoder, no normaliser (which would
    make the tokens stand for other text than the document's), and an EOD token."""
    where = f"tokenizer {path}"
    try:
        hf = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for any malformed file
        raise DataConfigError(f"{where}: not a tokenizer.json ({e})") from e
    spec = json.loads(hf.to_str())
    decoder = (spec.get("decoder") or {}).get("type")
    if spec["model"].get("type") != "BPE" or decoder != "ByteLevel" or spec.get("normalizer"):
        raise DataConfigError(
            f"{where}: not a byte-level BPE (model {spec['model'].get('type')}, decoder "
            f"{decoder}, normalizer {(spec.get('normalizer') or {}).get('type')}); bits per byte "
            "needs the bytes of every token"
        )
    return ByteLevelBPE(hf, None, where)
