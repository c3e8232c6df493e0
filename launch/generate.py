"""Continuations of prompts by a trained sequence model.

    python -m launch.generate --workdir=runs/x --prompt="def " [--prompt=...] [--step=N]
        [--max_new_tokens=64] [--num_samples=1] [--batch_size=8] [--seed=0]
        [--temperature=1] [--top_k=0] [--top_p=1] [--stop_token=ID ...] [--output=out.jsonl]
        [--draft_workdir=runs/small [--draft_tokens=4] [--draft_step=N]]

Restores the run's newest checkpoint that verifies (or checkpoint --step), then continues each
prompt (--prompt, repeatable, or --prompts_file: one per line, or a .jsonl of {"prompt": ...})
--num_samples times, --batch_size continuations at a time. A run whose tokens read as text (its
dataset's tokenizer, or a converted checkpoint's tokenizer.json in the run: generation/codecs.py)
takes text prompts and prints text; any other takes and prints token ids ("3 17 5"). Sampling
keeps the --top_k most likely tokens, then the fewest of those reaching probability --top_p,
then draws at --temperature (0: greedy). A continuation ends after --max_new_tokens or at a
--stop_token (kept in its tokens, left out of its text). The same run, prompts, settings and
--seed give the same tokens. With --output, each continuation is a line of JSON there instead of
text on stdout.

With --draft_workdir, a smaller run over the same tokens (the same dataset and data parameters,
seq_len aside) drafts --draft_tokens tokens at a time for this run to verify in one pass
(speculative decoding, generation/speculative.py): the continuations come from this run's
distribution (at --temperature=0 they are its greedy tokens), only faster when the draft is
cheap and often right. How many draft tokens were accepted is printed on stderr, and with
--output recorded per continuation. The same --seed gives the same tokens with the same draft,
not the tokens this run draws alone.

Exit status: 0, or 2 for bad input (no run or checkpoint there, a model that is not a sequence
model, an empty prompt, a token outside the vocabulary, a prompt the model cannot continue that
far, settings that select nothing, a draft over other tokens).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from atomic_write import write_atomically
from data import DatasetSpec
from generation.batches import Continuation, generate_all
from generation.codecs import TextCodec, text_codec
from generation.decode import Generator, generates
from generation.prompts import Prompt, check_fits, encode, read_file
from generation.sampling import Sampling
from generation.speculative import DraftAndTarget, SpeculativeGenerator, check_same_tokens
from runtime import assembly, host_memory
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error
from runtime.workdir import run_config

DEFAULT_DRAFT_TOKENS = 4


def parse_args(argv: list[str]):
    parser = ArgumentParser(prog="python -m launch.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory (launch.train's)")
    parser.add_argument("--step", type=int, help="the checkpoint (default: the newest)")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    parser.add_argument("--prompts_file", help="one prompt per line, or .jsonl {'prompt': ...}")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--num_samples", type=int, default=1, help="continuations per prompt")
    parser.add_argument("--batch_size", type=int, default=8, help="continuations at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top_k", type=int, default=0, help="0: the whole vocabulary")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--stop_token", type=int, action="append", default=[], help="a token id")
    parser.add_argument("--output", help="write the continuations here as JSON lines")
    parser.add_argument("--draft_workdir", help="a smaller run over the same tokens to draft")
    parser.add_argument("--draft_step", type=int, help="the draft's checkpoint (default: newest)")
    parser.add_argument("--draft_tokens", type=int, help="drafted per target pass (default 4)")
    args = parser.parse_args(argv[1:])
    if (args.prompt is None) == (args.prompts_file is None):
        raise UsageError("give --prompt=... (repeatable) or --prompts_file=..., one of them")
    if args.draft_workdir is None:
        for flag in ("draft_tokens", "draft_step"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} needs --draft_workdir (a run to draft with)")
    elif args.draft_tokens is None:
        args.draft_tokens = DEFAULT_DRAFT_TOKENS
    for flag in ("max_new_tokens", "num_samples", "batch_size", "draft_tokens"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.output is not None:
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            raise UsageError(f"--output {args.output!r}: directory {parent!r} does not exist")
    return args


def sequence_model(config: Any, workdir: str) -> tuple[Any, DatasetSpec]:
    """(the run's model, its data's spec); UsageError unless the model is a sequence model."""
    spec = assembly.data_shapes(config)
    model, _ = assembly.model_and_objective(config, spec)
    if not generates(model):
        raise UsageError(
            f"run {workdir!r} trained a {config.model.name!r} model on {spec.name!r}: only "
            "sequence models (model.name=lm) generate"
        )
    return model, spec


def record(
    continuation: Continuation, prompts: list[Prompt], codec: TextCodec | None
) -> dict[str, object]:
    """A continuation as a line of --output."""
    line: dict[str, object] = {
        "prompt_index": continuation.prompt,
        "sample": continuation.sample,
        "prompt": prompts[continuation.prompt],
        "tokens": continuation.tokens,
        "ended": "stop_token" if continuation.stopped else "max_new_tokens",
    }
    if continuation.draft is not None:
        line["draft"] = continuation.draft
    if codec is not None:
        line["text"] = text(continuation, codec)
    return line


def text(continuation: Continuation, codec: TextCodec) -> str:
    tokens = continuation.tokens[:-1] if continuation.stopped else continuation.tokens
    return codec.decode(tokens)


def show(continuations: list[Continuation], codec: TextCodec | None) -> None:
    """Each continuation on stdout: its text, or its ids; headed when there are several."""
    for c in continuations:
        if len(continuations) > 1:
            print(f"--- prompt {c.prompt + 1}, sample {c.sample + 1} ---")
        print(text(c, codec) if codec is not None else " ".join(map(str, c.tokens)))


def draft_summary(continuations: list[Continuation], draft: str, step: int, k: int) -> str:
    """How much of the draft the target accepted, over every continuation."""
    records = [c.draft for c in continuations if c.draft is not None]
    proposed = sum(r["proposed"] for r in records)
    accepted = sum(r["accepted"] for r in records)
    # A continuation's first token comes from the prompt's prefill, a target pass too.
    passes = sum(r["target_passes"] for r in records) + len(records)
    tokens = sum(len(c.tokens) for c in continuations)
    rate = f" ({accepted / proposed:.1%})" if proposed else ""
    return (
        f"draft run {draft} at step {step}, --draft_tokens={k}: {accepted} of {proposed} draft "
        f"tokens accepted{rate}; {tokens / passes:.2f} tokens a target pass (prefill included)"
    )


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    args = parse_args(argv)
    config = run_config(args.workdir)
    model, spec = sequence_model(config, args.workdir)
    if args.draft_workdir is not None:
        draft_config = run_config(args.draft_workdir)
        check_same_tokens(config, draft_config, args.draft_workdir)
        draft, draft_spec = sequence_model(draft_config, args.draft_workdir)
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    sampling.check(spec.vocab_size)
    for token in args.stop_token:
        if not 0 <= token < spec.vocab_size:
            raise UsageError(
                f"--stop_token {token} is outside the vocabulary (0..{spec.vocab_size - 1})"
            )
    codec = text_codec(config, args.workdir)
    given = args.prompt if args.prompt is not None else read_file(args.prompts_file)
    prompts = encode(given, codec, spec.vocab_size)
    k = args.draft_tokens or 0
    check_fits(
        prompts, args.max_new_tokens, spec.seq_len, model.fixed_length_reason(), draft_tokens=k
    )
    if args.draft_workdir is not None:
        reason = draft.fixed_length_reason()
        check_fits(
            prompts, args.max_new_tokens, draft_spec.seq_len, reason, draft_tokens=k,
            model="the draft model",
        )  # fmt: skip

    step, params = assembly.restored_params(config, args.workdir, "generate from", args.step)
    stops = tuple(args.stop_token)
    if args.draft_workdir is None:
        generator = Generator(model, args.max_new_tokens, sampling, stops)
    else:
        draft_step, draft_params = assembly.restored_params(
            draft_config, args.draft_workdir, "draft from", args.draft_step
        )
        generator = SpeculativeGenerator(model, draft, args.max_new_tokens, k, sampling, stops)
        params = DraftAndTarget(target=params, draft=draft_params)
    continuations = generate_all(
        generator,
        params,
        prompts,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    if args.output is None:
        show(continuations, codec)
    else:
        lines = [json.dumps(record(c, given, codec)) + "\n" for c in continuations]
        write_atomically(args.output, "".join(lines))
    where = f" to {args.output}" if args.output else ""
    print(
        f"{len(continuations)} continuation(s) of run {args.workdir} at step {step}{where}",
        file=sys.stderr,
    )
    if args.draft_workdir is not None:
        print(draft_summary(continuations, args.draft_workdir, draft_step, k), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
