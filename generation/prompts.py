"""Prompts as a user gives them, as token ids, checked before any compute.

A prompt is text (for a run whose tokens read as text, generation/codecs.py) or token ids
("3 17 5" or "3,17,5"). `--prompts_file` holds one prompt per line, empty lines skipped; a
`.jsonl` file one JSON object per line whose "prompt" is the text (or the ids as a string), or a
list of ids.
"""

from __future__ import annotations

import json
import os
import re

from generation.codecs import TextCodec
from runtime.errors import UsageError

Prompt = str | list[int]


def read_file(path: str) -> list[Prompt]:
    """The prompts of a prompts file (see the module docstring)."""
    if not os.path.isfile(path):
        raise UsageError(f"--prompts_file {path!r} is not a file")
    with open(path, encoding="utf-8") as f:
        lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1)]
    lines = [(n, line) for n, line in lines if line]
    if not path.endswith(".jsonl"):
        return [line for _, line in lines]
    prompts = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} line {n} is not JSON: {e}") from e
        prompt = record.get("prompt") if isinstance(record, dict) else None
        is_ids = isinstance(prompt, list) and all(type(t) is int for t in prompt)
        if not (isinstance(prompt, str) or is_ids):
            raise UsageError(
                f'{path} line {n}: needs {{"prompt": <text, or a list of token ids>}}, got {line}'
            )
        prompts.append(prompt)
    return prompts


def to_tokens(prompt: Prompt, codec: TextCodec | None, where: str) -> list[int]:
    """The prompt's token ids: a list as it is, text through the codec, else parsed as ids."""
    if isinstance(prompt, list):
        return prompt
    if codec is not None:
        return codec.encode([prompt])[0].tolist()
    fields = [f for f in re.split(r"[\s,]+", prompt) if f]
    if not all(re.fullmatch(r"-?\d+", f) for f in fields):
        raise UsageError(
            f"{where} {prompt!r}: this run's tokens are ids (its dataset declares no text "
            "tokenizer), so a prompt is token ids separated by spaces or commas"
        )
    return [int(f) for f in fields]


def encode(prompts: list[Prompt], codec: TextCodec | None, vocab_size: int) -> list[list[int]]:
    """Each prompt's token ids, checked: not empty, every token in the vocabulary. UsageError
    names the first bad prompt."""
    if not prompts:
        raise UsageError("no prompt: give --prompt=... or a --prompts_file with at least one")
    encoded = []
    for i, prompt in enumerate(prompts, 1):
        where = f"prompt {i}"
        tokens = to_tokens(prompt, codec, where)
        if not tokens:
            raise UsageError(f"{where} is empty: a continuation needs at least one token")
        outside = [t for t in tokens if not 0 <= t < vocab_size]
        if outside:
            raise UsageError(
                f"{where}: token {outside[0]} is outside the model's vocabulary "
                f"(0..{vocab_size - 1})"
            )
        encoded.append(tokens)
    return encoded


def check_fits(
    prompts: list[list[int]],
    max_new_tokens: int,
    seq_len: int,
    fixed_length: str | None,
    *,
    draft_tokens: int = 0,
    model: str = "this model",
) -> None:
    """A model defined only up to its training length (`fixed_length` says why, else None)
    cannot continue past it: a prompt of n tokens needs n + max_new_tokens - 1 positions, and
    k + 1 more with a draft of k tokens a round (generation/speculative.py: the last round's
    chunks reach past the last token, their padding included)."""
    if fixed_length is None:
        return
    lookahead = draft_tokens + 1 if draft_tokens else 0
    settings = f"--max_new_tokens={max_new_tokens}"
    settings += f" and --draft_tokens={draft_tokens}" if draft_tokens else ""
    for i, tokens in enumerate(prompts, 1):
        needed = len(tokens) + max_new_tokens - 1 + lookahead
        if needed > seq_len:
            raise UsageError(
                f"prompt {i} has {len(tokens)} token(s): with {settings} it needs {needed} "
                f"positions, more than the {seq_len} {model} takes ({fixed_length})"
            )
