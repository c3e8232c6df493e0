"""Metrics that are not means, so they are derived after aggregation, never averaged per batch.

The loop aggregates an objective's metrics as weighted means (sum(metric * weight) / sum(weight)).
Bits per token is linear in the mean loss, but perplexity is exp(mean loss), and the mean of
per-batch perplexities is not the perplexity of the whole set: both come from the aggregate here.
"""

from __future__ import annotations

import math


def derived_metrics(aggregated: dict[str, float]) -> dict[str, float]:
    """{'perplexity', 'bits_per_token'} from aggregated means; {} without a loss.

    Uses the unsmoothed `nll` when present (label smoothing makes `loss` the smoothed
    cross-entropy, which is not a log-likelihood).
    """
    nll = aggregated.get("nll", aggregated.get("loss"))
    if nll is None:
        return {}
    nll = float(nll)
    perplexity = math.exp(nll) if nll < math.log(float("1e308")) else math.inf
    return {"perplexity": perplexity, "bits_per_token": nll / math.log(2)}
