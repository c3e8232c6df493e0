"""Continuations of prompts by a trained sequence model. `python -m launch.generate` is the
command; this package is the work, one module per job:

- `sampling`: the next token from logits (top-k, then top-p, then temperature; 0 is greedy);
- `decode`: one batch of right-padded prompts through the model's parallel `prefill`, then a
  jitted `lax.while_loop` of `decode_step` over the donated cache;
- `recompute`: the same tokens without a cache, each from a forward pass over the whole prefix
  (the baseline the cache is measured against);
- `timing`: prefill, cached and recomputed decoding timed side by side per mixer, batch and
  context (`python -m launch.benchmark --decode`);
- `speculative`: the same with a draft model proposing tokens that the model verifies in one
  `prefill` a round (speculative decoding, lossless);
- `batches`: many prompts, each sampled several times, as batches of one shape;
- `prompts`: prompts as given (text or ids, on the command line or in a file), checked;
- `codecs`: whether a run's tokens are text, and how they read (its dataset declares it);

The speculative decoder builds on the same pieces: the model's `prefill` from a decoding cache
scores k draft tokens in one pass, `sampling.sampling_logits` gives the distributions to accept
them by, and re-advancing a cache kept aside by the accepted tokens rolls it back (unless the
model's cache `rewinds` by itself).
"""
