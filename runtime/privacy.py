"""DP-SGD's privacy accounting: the (epsilon, delta) a run has spent, from `dp_accounting`.

The mechanism (runtime/optimizer.py, runtime/step.py): every step clips each example's gradient to
L2 norm C, sums them, adds Gaussian noise of standard deviation sigma * C to the sum and divides
by the batch size B (optax.contrib.differentially_private_aggregate). Adding or removing one
example moves that sum by at most C, so one step is a Gaussian mechanism with noise multiplier
sigma; a run is `train.steps` of them composed.

Assumption: the analysis below is for Poisson subsampling (each example joins each batch
independently with probability q = B / N). Our loader does not do that: it draws fixed-size
batches from shuffled epochs, without replacement. Like TF Privacy's and Opacus's DP-SGD
reports we nevertheless use the Poisson-subsampled analysis; for shuffled batches it is a
widely used approximation, not a proof (Chua et al. 2024, "How Private are DP-SGD
Implementations?", show it can understate epsilon). Every reported guarantee says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import ml_collections

from runtime.errors import UsageError

if TYPE_CHECKING:
    import dp_accounting

# Accountant name -> what the manifest calls it.
ACCOUNTANTS = {
    "rdp": "dp_accounting.rdp.RdpAccountant (default orders)",
    "pld": "dp_accounting.pld.PLDAccountant (default discretisation)",
}
MECHANISM = (
    "DP-SGD: per-example L2 clipping + Gaussian noise (optax differentially_private_aggregate)"
)
ASSUMPTION = (
    "Poisson subsampling with q = batch_size / train examples (the standard DP-SGD analysis, as "
    "in TF Privacy and Opacus); the loader actually draws fixed-size batches from shuffled "
    "epochs, for which this is an approximation. Add-or-remove-one adjacency. Covers the "
    "parameters and checkpoints, not the train/* metrics (computed without noise). The noise "
    "is reproducible from the recorded seed: keep run directories as private as the data."
)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises UsageError for privacy settings no run can use (only when privacy.dp_sgd is on)."""
    p = config.privacy
    if not p.dp_sgd:
        return
    if not 0 < p.delta < 1:
        raise UsageError(f"privacy.delta must be in (0, 1), got {p.delta}")
    if p.noise_multiplier < 0:
        raise UsageError(f"privacy.noise_multiplier must be >= 0, got {p.noise_multiplier}")
    if not p.l2_clip_norm > 0:
        raise UsageError(f"privacy.l2_clip_norm must be > 0, got {p.l2_clip_norm}")
    if p.accountant not in ACCOUNTANTS:
        raise UsageError(
            f"unknown privacy.accountant {p.accountant!r}; valid: {', '.join(ACCOUNTANTS)}"
        )
    if config.train.grad_accum_steps != 1:
        # optax's DP aggregate clips and noises one whole batch of per-example gradients;
        # accumulating microbatches would noise each of them (optax says so of MultiSteps).
        raise UsageError(
            "privacy.dp_sgd needs train.grad_accum_steps=1, got "
            f"{config.train.grad_accum_steps} (the DP aggregate noises one whole batch)"
        )
    if config.optimizer.grad_clip_norm > 0:
        # The per-example clip is DP-SGD's clipping; clipping the noised mean again would
        # silently rescale the step.
        raise UsageError(
            "privacy.dp_sgd clips each example at privacy.l2_clip_norm; set "
            f"optimizer.grad_clip_norm=0 (got {config.optimizer.grad_clip_norm})"
        )


def sampling_probability(batch_size: int, train_examples: int) -> float:
    """q = B / N; a batch larger than the split is a UsageError (q > 1 means no subsampling)."""
    if batch_size > train_examples:
        raise UsageError(
            f"privacy.dp_sgd: train.batch_size={batch_size} exceeds the {train_examples} "
            "training examples"
        )
    return batch_size / train_examples


def dp_sgd_event(
    sampling_probability: float, noise_multiplier: float, steps: int
) -> dp_accounting.DpEvent:
    """`steps` compositions of the Poisson-subsampled Gaussian mechanism."""
    # Imported where it is used: dp_accounting brings scipy.signal and scipy.stats (about two
    # seconds), and every `launch.train` imports this module, private or not.
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )


def _make_accountant(name: str) -> dp_accounting.PrivacyAccountant:
    # Both with dp_accounting's defaults (RDP orders, PLD discretisation), which are what its
    # own and TF Privacy's published example values were computed with.
    import dp_accounting

    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if name == "pld":
        return dp_accounting.pld.PLDAccountant()
    raise ValueError(f"unknown accountant {name!r}; valid: {', '.join(ACCOUNTANTS)}")


def dp_sgd_epsilon(
    sampling_probability: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """Epsilon of `steps` DP-SGD steps at `delta`: 0 before any step, inf without noise."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    event = dp_sgd_event(sampling_probability, noise_multiplier, steps)
    return float(_make_accountant(accountant).compose(event).get_epsilon(delta))


@dataclasses.dataclass(frozen=True)
class DpSgdAccounting:
    """A run's DP-SGD parameters; says what guarantee any number of its steps has."""

    noise_multiplier: float
    l2_clip_norm: float
    sampling_probability: float
    delta: float
    accountant: str

    def epsilon(self, steps: int) -> float:
        return dp_sgd_epsilon(
            self.sampling_probability, self.noise_multiplier, steps, self.delta, self.accountant
        )

    def metrics(self, steps: int) -> dict[str, float]:
        """What the loop logs after `steps` steps: the epsilon spent so far. Nothing without
        noise (clipping only): epsilon is then infinite, which JSON cannot write."""
        if self.noise_multiplier == 0:
            return {}
        return {"privacy/epsilon": self.epsilon(steps)}

    def guarantee(self, steps: int) -> dict[str, Any]:
        """The manifest's `privacy` entry: (epsilon, delta) after `steps` steps, and how.
        Epsilon is None without noise: clipping alone guarantees nothing."""
        return {
            "mechanism": MECHANISM,
            "noise_multiplier": self.noise_multiplier,
            "l2_clip_norm": self.l2_clip_norm,
            "sampling_probability": self.sampling_probability,
            "steps": steps,
            "delta": self.delta,
            "epsilon": self.epsilon(steps) if self.noise_multiplier > 0 else None,
            "accountant": ACCOUNTANTS[self.accountant],
            "assumption": ASSUMPTION,
        }


def accounting(config: ml_collections.ConfigDict, train_examples: int) -> DpSgdAccounting | None:
    """The run's accounting, or None when privacy.dp_sgd is off."""
    p = config.privacy
    if not p.dp_sgd:
        return None
    return DpSgdAccounting(
        noise_multiplier=float(p.noise_multiplier),
        l2_clip_norm=float(p.l2_clip_norm),
        sampling_probability=sampling_probability(config.train.batch_size, train_examples),
        delta=float(p.delta),
        accountant=p.accountant,
    )
