"""How a dataset's tokens read as text: prompts in, continuations out.

`CODECS` maps a dataset name to a factory `(run config) -> TextCodec`. A dataset with an entry is
text: prompts are text, encoded by its codec, and continuations are printed decoded. Any other
dataset's tokens are ids: prompts are ids ("3 17 5") and continuations are printed as ids. A
text dataset registers its codec here (the factory gets the run's whole config, so a tokenizer
prepared with the data can be read from where the data are).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from registry import Registry


class TextCodec(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class Utf8Bytes:
    """Tokens are the UTF-8 bytes of the text (ids 0..255). A continuation may stop inside a
    character, or a byte model may produce bytes that are not UTF-8: those decode as U+FFFD."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


CODECS: Registry[Callable[[Any], TextCodec]] = Registry("text codec")
CODECS.register("pydoc_text")(lambda config: Utf8Bytes())


def text_codec(config: Any) -> TextCodec | None:
    """The codec of the run's dataset, or None when its tokens are ids."""
    name = config.data.name
    return CODECS.get(name)(config) if name in CODECS else None
