"""Metrics that are not means, so they are derived after aggregation, never averaged per batch.

The loop aggregates an objective's metrics as weighted means (sum(metric * weight) / sum(weight)).
Bits per token is linear in the mean loss, but perplexity is exp(mean loss), and the mean of
per-batch perplexities is not the perplexity of the whole set: both come from the aggregate here.

Bits per byte is the one number that compares models with different tokenizers: the nats of all
scored tokens / ln 2 / the UTF-8 bytes of text those tokens stand for. Text batches carry each
target's bytes, and the objective reports their mean over the scored tokens, `bytes_per_token`,
weighted by the same token count as the loss; so the aggregated nll / bytes_per_token is (total
nats / tokens) / (total bytes / tokens) = total nats / total bytes, exactly, over whatever was
evaluated. A byte-level tokenizer stands for one byte per token, so there it equals bits per
token.
"""

from __future__ import annotations

import math


def derived_metrics(aggregated: dict[str, float]) -> dict[str, float]:
    """{'perplexity', 'bits_per_token'} from aggregated means, and 'bits_per_byte' for text (with
    `bytes_per_token`); {} without a loss.

    Uses the unsmoothed `nll` when present (label smoothing makes `loss` the smoothed
    cross-entropy, which is not a log-likelihood).
    """
    nll = aggregated.get("nll", aggregated.get("loss"))
    if nll is None:
        return {}
    nll = float(nll)
    perplexity = math.exp(nll) if nll < math.log(float("1e308")) else math.inf
    derived = {"perplexity": perplexity, "bits_per_token": nll / math.log(2)}
    if aggregated.get("bytes_per_token"):
        derived["bits_per_byte"] = derived["bits_per_token"] / float(aggregated["bytes_per_token"])
    return derived
