"""Speculative decoding: a small draft model proposes, the target model verifies in one pass
(Leviathan et al. 2023, "Fast inference from transformers via speculative decoding"; Chen et al.
2023, "Accelerating large language model decoding with speculative sampling").

Each round, for every row:
1. the draft proposes k tokens d_1..d_k, one `decode_step` each, drawing from its distributions
   q_1..q_k under the sampling settings;
2. the target's `prefill` scores the pending token and the k proposals in one parallel pass from
   its cache: p_1..p_{k+1};
3. d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)), in order, until the first
   rejection; at a rejection at i the row draws its next token from max(p_i - q_i, 0)
   normalised, and when all k are accepted from p_{k+1} (a bonus token). Greedy decoding (the
   temperature 0) accepts d_i when it is the target's argmax and then takes the argmax.
A row thus gains between 1 and k + 1 tokens a round, whose distribution is the target's own
sampling distribution (the draft changes only how fast they come), and at the temperature 0 the
very tokens of the target's greedy decoding. Rows gain different numbers of tokens: each row
keeps its own position, as `prefill` and `decode_step` allow.

Rolling back. A cache that has seen the rejected tokens must forget them. A model whose every
layer `rewinds` (models/lm.py: full attention's KV cache, whose slots past a chunk's start are
never read) continues from the cache as it is. Any other (a recurrent state folds every token
in) keeps the cache from before the round aside and re-advances it by the accepted tokens only:
for the target a second `prefill` from the kept cache, skipped in a round where every row
accepted all k (the verification's cache is then the right one); for the draft the catch-up pass
it makes every round anyway (below) starts from the kept cache.

Caches. Between rounds the target's cache holds every token before the pending one (the last
emitted), which its next verification feeds ahead of the proposals. The draft's lags further:
it lacks all of the last round's gains (the proposals accepted and the new token; at the start,
the first token, drawn from the prompt's prefill). Each round opens with one draft `prefill` of
them, which yields the draft's first distribution, then k - 1 draft decode steps: one parallel
pass and k - 1 steps of the draft a round.

The whole decoding is one jitted `lax.while_loop` over rounds, the caches donated. A row's
randomness is its own key folded with the round, so rows are independent of their batch. The
same key does not give the tokens the target alone would have drawn: the distribution is the
same, the draws are not.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from generation.decode import Generated, Speculation, prefill_prompts
from generation.sampling import Sampling, sample, sampling_logits
from models.mixer import hold_padding
from runtime.errors import UsageError


class DraftAndTarget(NamedTuple):
    """The parameters a speculative decoder runs on."""

    target: Any
    draft: Any


def check_same_tokens(target: Any, draft: Any, draft_workdir: str) -> None:
    """UsageError unless a draft run reads and writes the target's tokens, from their run
    configs: the same dataset and data parameters (its tokenizer and vocabulary follow from
    them), whatever the window length it trained on."""

    def tokens(config: Any) -> tuple[str, dict]:
        params = config.data[config.data.name].to_dict()
        params.pop("seq_len", None)
        return config.data.name, params

    if tokens(target) != tokens(draft):
        (name, params), (draft_name, draft_params) = tokens(target), tokens(draft)
        raise UsageError(
            f"draft run {draft_workdir!r} does not share the target's tokens: it trained on "
            f"{draft_name} {draft_params}, the target on {name} {params} (a draft needs the same "
            "dataset and data parameters, seq_len aside)"
        )


@dataclasses.dataclass(frozen=True)
class SpeculativeGenerator:
    """Generation settings for a target model and its draft; `__call__` runs them on a batch of
    prompts, with the call of generation.decode.Generator and `DraftAndTarget` parameters. The
    jitted programs are cached per batch shape."""

    target: Any  # a models.lm.SequenceModel
    draft: Any  # another, over the same vocabulary
    max_new_tokens: int
    draft_tokens: int  # k: proposals per round
    sampling: Sampling
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.draft_tokens < 1:
            raise ValueError(f"draft_tokens must be >= 1, got {self.draft_tokens}")

    def cache_length(self, prompt_length: int) -> int:
        """Positions a cache needs for prompts padded to `prompt_length`: a row of n prompt
        tokens with one token left to emit has its pending token at n + max_new_tokens - 2, and
        the draft's catch-up after it fills k + 1 positions (padding included), so positions
        up to n + max_new_tokens + k - 1 are fed."""
        return prompt_length + self.max_new_tokens + self.draft_tokens

    def __call__(
        self,
        params: DraftAndTarget,
        prompts: np.ndarray,
        lengths: np.ndarray,
        keys: jax.Array,
        active: np.ndarray | None = None,
    ) -> Generated:
        """prompts [B, P] int32, right-padded; lengths [B] (each >= 1); keys [B]; active [B]
        (default all): inactive rows count as stopped from the start."""
        lengths = jnp.asarray(lengths, jnp.int32)
        active = np.ones(len(lengths), bool) if active is None else active
        max_len, prompts = self.cache_length(prompts.shape[1]), jnp.asarray(prompts)
        logits, target = prefill_prompts(self.target, max_len, params.target, prompts, lengths)
        _, draft = prefill_prompts(self.draft, max_len, params.draft, prompts, lengths)
        out, _ = _speculate(self, params, target, draft, logits, lengths, keys, active)
        tokens, counts, stopped, *drafted = (np.asarray(x) for x in out)
        return Generated(tokens, counts, stopped, speculation=Speculation(*drafted))


class Rows(NamedTuple):
    """What the loop carries per row, besides the two caches."""

    tokens: jax.Array  # [B, max_new_tokens]
    counts: jax.Array  # tokens emitted; the last of them is the pending one
    stopped: jax.Array  # by a stop token, or inactive
    gained: jax.Array  # [B, k + 1]: the last round's accepted proposals and new token, ...
    gained_count: jax.Array  # ... this many of them (from 1 to k + 1), not yet in the draft
    proposed: jax.Array  # draft tokens proposed, per row
    accepted: jax.Array  # of them, accepted
    passes: jax.Array  # target verification passes


def _draw(sampling: Sampling, keys: jax.Array, logits: jax.Array) -> jax.Array:
    """One token per row of logits [B, V], each row with its key."""
    return jax.vmap(functools.partial(sample, sampling=sampling))(keys, logits)


def _probabilities(sampling: Sampling, logits: jax.Array) -> jax.Array:
    """The distribution a draw comes from, as probabilities [..., V]."""
    return jax.nn.softmax(sampling_logits(logits, sampling), axis=-1)


def _verify(
    sampling: Sampling,
    proposals: jax.Array,
    draft_logits: jax.Array,
    target_logits: jax.Array,
    keys: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """proposals [B, k]; the draft's logits they came from [B, k, V]; the target's [B, k + 1, V]
    -> (accepted [B]: how many proposals are kept, the next token [B])."""
    k = proposals.shape[1]
    if sampling.greedy:
        choices = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, k + 1]
        kept = proposals == choices[:, :k]
        accepted = jnp.sum(jnp.cumprod(kept, axis=1), axis=1)
        return accepted, jnp.take_along_axis(choices, accepted[:, None], axis=1)[:, 0]
    accept_keys, residual_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    p = _probabilities(sampling, target_logits)  # [B, k + 1, V]
    q = _probabilities(sampling, draft_logits)  # [B, k, V]
    p_of = jnp.take_along_axis(p[:, :k], proposals[..., None], axis=2)[..., 0]
    q_of = jnp.take_along_axis(q, proposals[..., None], axis=2)[..., 0]
    uniform = jax.vmap(lambda key: jax.random.uniform(key, (k,)))(accept_keys)
    kept = uniform * q_of < p_of  # u < p/q: q > 0 where the draft drew
    accepted = jnp.sum(jnp.cumprod(kept, axis=1), axis=1)
    # After the last proposal the draft's distribution is taken as zero: max(p - 0, 0) = p, the
    # bonus token's distribution, so one residual draw serves both cases.
    q = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)
    at = accepted[:, None, None]
    p_at = jnp.take_along_axis(p, at, axis=1)[:, 0]
    residual = jnp.maximum(p_at - jnp.take_along_axis(q, at, axis=1)[:, 0], 0.0)
    # A rejection means p(d) < q(d), so p - q has mass somewhere; rounding might still leave none.
    residual = jnp.where(residual.sum(axis=-1, keepdims=True) > 0, residual, p_at)
    token = jax.vmap(jax.random.categorical)(residual_keys, jnp.log(residual))
    return accepted, token.astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(2, 3))
def _speculate(
    generator: SpeculativeGenerator,
    params: DraftAndTarget,
    target_cache: Any,
    draft_cache: Any,
    first_logits: jax.Array,
    lengths: jax.Array,
    keys: jax.Array,
    active: jax.Array,
) -> tuple[tuple[jax.Array, ...], Any]:
    """The rounds -> ((tokens [B, max_new_tokens], counts, stopped, proposed, accepted, passes),
    the caches after the last round, in the buffers donated)."""
    target, draft, sampling = generator.target, generator.draft, generator.sampling
    k, limit = generator.draft_tokens, generator.max_new_tokens
    stop_tokens = jnp.asarray(generator.stop_tokens, jnp.int32)
    target_rewinds, draft_rewinds = target.rewinds(), draft.rewinds()
    batch = lengths.shape[0]
    rows = jnp.arange(batch)[:, None]
    offsets = jnp.arange(k + 1)[None, :]

    def round_keys(r: jax.Array) -> jax.Array:
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, r)

    def emit(rows_: Rows, tokens: jax.Array, count: jax.Array) -> Rows:
        """Writes each live row's first `count` of tokens [B, k + 1], cut at its first stop token
        and at max_new_tokens; they are the gains the draft catches up on next."""
        live = ~rows_.stopped & (rows_.counts < limit)
        room = jnp.minimum(count, limit - rows_.counts)
        stops = jnp.isin(tokens, stop_tokens) & (offsets < room[:, None])
        stopping = jnp.any(stops, axis=1)
        written = jnp.where(stopping, jnp.argmax(stops, axis=1) + 1, room)
        written = jnp.where(live, written, 0)
        # Slot max_new_tokens is out of range: what is not written goes there and is dropped.
        slots = jnp.where(offsets < written[:, None], rows_.counts[:, None] + offsets, limit)
        return rows_._replace(
            tokens=rows_.tokens.at[rows, slots].set(tokens, mode="drop"),
            counts=rows_.counts + written,
            stopped=rows_.stopped | (live & stopping),
            gained=tokens,
            gained_count=count,
        )

    # The first token comes from the prompt's prefill, as without a draft.
    first = _draw(sampling, round_keys(jnp.int32(0)), first_logits)
    first = jnp.zeros((batch, k + 1), jnp.int32).at[:, 0].set(first)
    zeros = jnp.zeros(batch, jnp.int32)
    start = Rows(
        tokens=jnp.zeros((batch, limit), jnp.int32),
        counts=zeros,
        stopped=~active,
        gained=first,
        gained_count=zeros + 1,
        proposed=zeros,
        accepted=zeros,
        passes=zeros,
    )
    start = emit(start, first, zeros + 1)

    def unfinished(carry: tuple) -> jax.Array:
        _, _, _, rows_ = carry
        return jnp.any(~rows_.stopped & (rows_.counts < limit))

    def advance(carry: tuple) -> tuple:
        r, target_cache, draft_cache, rows_ = carry
        live = ~rows_.stopped & (rows_.counts < limit)
        pending = jnp.take_along_axis(rows_.tokens, (rows_.counts - 1)[:, None], axis=1)[:, 0]
        # The pending token's position; a finished row stays at its last live round's, inside
        # the cache (its results are thrown away).
        position = lengths + jnp.minimum(rows_.counts, limit - 1) - 1
        split = functools.partial(jax.random.split, num=k + 1)
        round_keys_ = jax.vmap(split)(round_keys(r))  # [B, k + 1]: k draws, then verification

        # The draft catches up on the last round's gains, which end with the pending token (a
        # finished row on its pending token alone, so that it stays inside the cache).
        count = jnp.where(live, rows_.gained_count, 1)
        logits, draft_cache = draft.apply(
            {"params": params.draft}, rows_.gained, draft_cache, position + 1 - count, count,
            (count - 1)[:, None], method="prefill",
        )  # fmt: skip

        def propose(carry: tuple, i: jax.Array) -> tuple:
            cache, logits = carry
            token = _draw(sampling, round_keys_[:, i], logits)
            next_logits, cache = draft.apply(
                {"params": params.draft}, token, cache, position + 1 + i, method="decode_step"
            )
            return (cache, next_logits), (token, logits)

        (stepped, last_logits), (proposals, q_logits) = jax.lax.scan(
            propose, (draft_cache, logits[:, 0]), jnp.arange(k - 1)
        )
        proposals = jnp.concatenate(
            [proposals.T, _draw(sampling, round_keys_[:, k - 1], last_logits)[:, None]], axis=1
        )
        q_logits = jnp.concatenate([jnp.moveaxis(q_logits, 0, 1), last_logits[:, None]], axis=1)
        if draft_rewinds:
            draft_cache = stepped  # the next catch-up overwrites what it must forget

        fed = jnp.concatenate([pending[:, None], proposals], axis=1)  # [B, k + 1]
        p_logits, verified = target.apply(
            {"params": params.target}, fed, target_cache, position, jnp.full_like(position, k + 1),
            method="prefill",
        )  # fmt: skip
        accepted, token = _verify(sampling, proposals, q_logits, p_logits, round_keys_[:, k])

        if target_rewinds:
            target_cache = verified
        else:

            def rewound() -> Any:
                _, cache = target.apply(
                    {"params": params.target}, fed, target_cache, position, accepted + 1,
                    method="prefill",
                )  # fmt: skip
                return hold_padding(accepted == k, verified, cache)

            rejected = jnp.any(live & (accepted < k))
            target_cache = jax.lax.cond(rejected, rewound, lambda: verified)

        # The accepted proposals and the next token, which becomes the pending one.
        gained = jnp.where(offsets < accepted[:, None], jnp.pad(proposals, ((0, 0), (0, 1))), 0)
        gained = jnp.where(offsets == accepted[:, None], token[:, None], gained)
        rows_ = emit(rows_, gained, accepted + 1)
        rows_ = rows_._replace(
            proposed=rows_.proposed + jnp.where(live, k, 0),
            accepted=rows_.accepted + jnp.where(live, accepted, 0),
            passes=rows_.passes + live,
        )
        return r + 1, target_cache, draft_cache, rows_

    carry = (jnp.int32(1), target_cache, draft_cache, start)
    _, target_cache, draft_cache, done = jax.lax.while_loop(unfinished, advance, carry)
    rows_out = (done.tokens, done.counts, done.stopped & active)
    return (*rows_out, done.proposed, done.accepted, done.passes), (target_cache, draft_cache)
