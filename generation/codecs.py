"""How a run's tokens read as text: prompts in, continuations out.

A run's tokens are text when its dataset declares the tokenizer they were made with
(`ArchlabBuilder.text_tokenizer`: pydoc_text's UTF-8 bytes; a text corpus's bytes, trained BPE or
tokenizer.json), or else when the run directory holds a tokenizer.json (a converted Hugging Face
checkpoint's, copied beside it by `launch.convert`). Then prompts are text, encoded by it, and
continuations are printed decoded. Otherwise tokens are ids: prompts are ids ("3 17 5") and
continuations are printed as ids. A new text dataset is covered by declaring its tokenizer; this
module names no dataset.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import tokenizers

import data
from analysis.runs import TOKENIZER_FILE
from runtime.errors import UsageError


class TextCodec(Protocol):
    """What `data.tokenizer.TextTokenizer` offers generation."""

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]: ...

    def decode(self, tokens: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class RunTokenizer:
    """A run directory's tokenizer.json, any kind Hugging Face's `tokenizers` reads. Prompts are
    encoded with its own special tokens (a beginning-of-sequence token where it adds one), as
    transformers encodes them for the checkpoint it came with."""

    hf: tokenizers.Tokenizer

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, np.int32) for e in self.hf.encode_batch(list(texts))]

    def decode(self, tokens: Sequence[int]) -> str:
        return self.hf.decode(list(tokens), skip_special_tokens=False)


def dataset_codec(config: Any) -> TextCodec | None:
    """The tokenizer the run's dataset declares, or None when its tokens are ids."""
    name = config.data.name
    try:
        return data.text_tokenizer(name, config.data[name].to_dict(), config.data.dir or None)
    except data.DataConfigError as e:
        raise UsageError(str(e)) from e


def text_codec(config: Any, workdir: str) -> TextCodec | None:
    """The run's codec: its dataset's tokenizer, else the run directory's tokenizer.json, else
    None (ids)."""
    codec = dataset_codec(config)
    path = os.path.join(workdir, TOKENIZER_FILE)
    if codec is not None or not os.path.isfile(path):
        return codec
    try:
        return RunTokenizer(tokenizers.Tokenizer.from_file(path))
    except Exception as e:  # tokenizers raises its own Exception type for any malformed file
        raise UsageError(f"{path} is not a tokenizer.json that tokenizers reads ({e})") from e
