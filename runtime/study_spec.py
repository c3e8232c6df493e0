"""What a study file declares, read and checked before anything runs.

A study is one file in experiments/. Next to `get_config(arg)` (which builds one arm's config
from `"<arm>"` or `"<arm>,<setting>"`), it declares:

    ARMS = {"attention": {...overrides...}, "mamba": {...}}   # arm name -> config overrides
    BASELINE = "attention"                 # every other arm is compared with it
    SEEDS = 3                              # seeds per arm unless --seeds says otherwise
    METRIC = "eval/accuracy"               # the primary metric ...
    HIGHER_IS_BETTER = True                # ... and its direction
    HYPOTHESIS = "In words, with its success criterion."
    CLAIMS = [("deltanet", "beats", "mamba")]   # the criterion, as comparisons on METRIC
    SETTINGS = {"small": {...}, "hard": {...}}  # optional: named variants of every arm
    BLOCK_BY = "data.name"                 # optional: compare arms only within blocks
    SOLVED_AT = 0.9                        # optional: a seed solves when its final METRIC
                                           # reaches this (needed by solve-rate claims)

A claim is (arm, relation, other arm) with relation "beats" or "loses to" on the primary
metric's final value (a Welch t-test), or (arm, "matches", other arm, margin): the two do not
differ by `margin` or more, in METRIC's units (an equivalence test, TOST: a difference that is
merely not significant is no evidence of none). The study's verdict is the claims' verdicts.

Solve-rate claims count the seeds whose final METRIC reaches SOLVED_AT (>= it when
HIGHER_IS_BETTER, <= otherwise), for arms whose seeds either learn or do not, which a mean
describes badly: (arm, "solves more often than", other arm) by Boschloo's exact test, or
(arm, "solves more often than", rate) against a fraction of seeds in (0, 1) by the exact
binomial test; "solves less often than" is the other direction. Both tests are one-sided.

Blocks: when arms differ in something that makes their metric incomparable (the task they are
trained and scored on), BLOCK_BY names the override key whose value puts an arm in its block.
Every arm sets that key in its overrides, and BASELINE then maps each block to its own
baseline arm, e.g. `BASELINE = {task: f"attention-{task}" for task in TASKS}`. Each arm is
compared only with its block's baseline (Holm's adjustment runs over all those comparisons
together), and a claim may only compare two arms of one block.

Differences of drops: (("mamba-ptq", "mamba-float"), "drops more than", ("attention-ptq",
"attention-float")) claims that the first pair's drop (from its second arm to its first, in the
worse direction of METRIC) exceeds the second pair's. Each pair lies within one block (the two
pairs may lie in different blocks: that is what the claim compares). A drop is taken per seed,
seed s of one arm against seed s of the other, which pairs them where one arm derives from the
other's run of the same seed; the two pairs' per-seed drops are compared by a Welch t-test,
one test in the claims' Holm family. "drops less than" is the other direction.

Derived arms: an arm may need another arm's run of the same seed. An override value
`run_of("<arm>")` stands for that run's directory: `launch.study` runs the named arm first, then
this arm's seed s with `--config.<key>=<arm's seed-s run>` (a distilled student:
`"objective.distillation.teacher": run_of("mamba-float")`), and marks it failed, without running
it, when that run fails. An arm whose overrides set `quant.mode` to a post-training mode
(`ptq_int8_weights`, `ptq_int8`) does not train: its run is `launch.quantize` of the run its
`quant.source: run_of(<arm>)` names, so its other overrides must equal that arm's. `get_config`
applies an arm's overrides through `own_overrides`, which leaves the `run_of` values out (by
hand, `launch.train` then needs the key on its command line). A `run_of` naming no arm, or arms
that need each other's runs in a cycle, is an error at load. Derived arms run on the local
backend only: `--backend=slurm` refuses a study that has them (one job array has no order).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

from analysis.study import (
    DIFFERENCE_RELATIONS,
    DROP_RELATIONS,
    EQUIVALENCE_RELATION,
    PROPORTION_RELATIONS,
    RELATIONS,
    Claim,
    StudySpec,
)
from runtime.config import load_python_file
from runtime.errors import UsageError

# quant.mode values that make an arm's run by launch.quantize instead of launch.train
# (runtime.quantization.POST_TRAINING, which imports flax: a study file is read before that).
POST_TRAINING_MODES = ("ptq_int8_weights", "ptq_int8")
QUANT_SOURCE = "quant.source"


@dataclasses.dataclass(frozen=True)
class ArmRun:
    """An override value: the run directory of `arm` at the seed of the run being made."""

    arm: str

    def __repr__(self) -> str:
        return f"run_of({self.arm!r})"


def run_of(arm: str) -> ArmRun:
    """In a study file's ARMS: this key's value is arm `arm`'s run of the same seed."""
    return ArmRun(arm)


def own_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """An arm's overrides without its `run_of` values, which only launch.study can fill in."""
    return {k: v for k, v in overrides.items() if not isinstance(v, ArmRun)}


REQUIRED = ("ARMS", "BASELINE", "SEEDS", "METRIC", "HIGHER_IS_BETTER", "HYPOTHESIS", "CLAIMS")


def load_study(path: str) -> StudySpec:
    """Reads and checks a study file; every problem is a one-line UsageError."""
    module = load_python_file(path, "study file")
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise UsageError(
            f"study file {path!r} does not declare {', '.join(missing)} "
            "(a study declares ARMS, BASELINE, SEEDS, METRIC, HIGHER_IS_BETTER, HYPOTHESIS, CLAIMS)"
        )
    arms = dict(module.ARMS)
    valid = ", ".join(arms)
    where = f"study file {path!r}"
    if not arms:
        raise UsageError(f"{where}: ARMS is empty")
    block_by = getattr(module, "BLOCK_BY", None)
    if block_by is None:
        if isinstance(module.BASELINE, Mapping):
            raise UsageError(
                f"{where}: BASELINE maps blocks to baselines but the study declares no BLOCK_BY "
                "(the config key whose value is an arm's block)"
            )
        if module.BASELINE not in arms:
            raise UsageError(f"{where}: BASELINE {module.BASELINE!r} is not an arm; valid: {valid}")
        block_of, baselines = dict.fromkeys(arms, ""), {"": module.BASELINE}
    else:
        block_of = _blocks(where, arms, block_by)
        baselines = _block_baselines(where, arms, block_by, block_of, module.BASELINE)
    if not isinstance(module.SEEDS, int) or module.SEEDS < 1:
        raise UsageError(f"{where}: SEEDS must be an integer >= 1, got {module.SEEDS!r}")
    if not isinstance(module.HIGHER_IS_BETTER, bool):
        raise UsageError(f"{where}: HIGHER_IS_BETTER must be True or False")
    solved_at = _solved_at(where, getattr(module, "SOLVED_AT", None))
    run_refs = _run_refs(where, arms)
    claims = [_claim(where, claim, arms, block_by, block_of, solved_at) for claim in module.CLAIMS]
    return StudySpec(
        name=os.path.splitext(os.path.basename(path))[0],
        path=path,
        arms=arms,
        baselines=baselines,
        block_of=block_of,
        block_by=block_by,
        seeds=module.SEEDS,
        metric=module.METRIC,
        higher_is_better=module.HIGHER_IS_BETTER,
        hypothesis=" ".join(str(module.HYPOTHESIS).split()),
        claims=tuple(claims),
        settings=tuple(getattr(module, "SETTINGS", {})),
        solved_at=solved_at,
        run_refs=run_refs,
        quantized={arm: refs[QUANT_SOURCE] for arm, refs in run_refs.items() if _is_ptq(arms[arm])},
    )


def _is_ptq(overrides: Mapping[str, Any]) -> bool:
    return overrides.get("quant.mode") in POST_TRAINING_MODES


def _run_refs(where: str, arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """{arm: {config key: the arm whose run of the same seed it names}} for the arms that use
    `run_of`, checked: named arms exist, no cycle, post-training arms quantize one."""
    refs = {
        arm: {key: value.arm for key, value in overrides.items() if isinstance(value, ArmRun)}
        for arm, overrides in arms.items()
    }
    for arm, named in refs.items():
        for key, other in named.items():
            if other not in arms:
                close = difflib.get_close_matches(other, list(arms), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UsageError(
                    f"{where}: arm {arm!r} sets {key!r} to run_of({other!r}), which is not an "
                    f"arm{hint}; valid: {', '.join(arms)}"
                )
    for arm in arms:
        _check_no_cycle(where, arm, refs, [])
    for arm, overrides in arms.items():
        if not _is_ptq(overrides):
            continue
        source = refs[arm].get(QUANT_SOURCE)
        if source is None or set(refs[arm]) != {QUANT_SOURCE}:
            raise UsageError(
                f"{where}: arm {arm!r} sets quant.mode={overrides['quant.mode']!r}, so its run is "
                f"launch.quantize of another arm's run: it must set {QUANT_SOURCE!r} to "
                "run_of(<that arm>), and no other run_of"
            )
        mine = {k: v for k, v in overrides.items() if not k.startswith("quant.")}
        theirs = {k: v for k, v in arms[source].items() if not k.startswith("quant.")}
        if mine != theirs:
            differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
            raise UsageError(
                f"{where}: arm {arm!r} quantizes arm {source!r}'s run, so it must set what "
                f"{source!r} sets outside quant.*; they differ in {', '.join(differ)}"
            )
    return {arm: named for arm, named in refs.items() if named}


def _check_no_cycle(where: str, arm: str, refs: dict[str, dict[str, str]], path: list[str]) -> None:
    if arm in path:
        cycle = " -> ".join([*path[path.index(arm) :], arm])
        raise UsageError(f"{where}: arms need each other's runs in a cycle: {cycle}")
    for other in refs[arm].values():
        _check_no_cycle(where, other, refs, [*path, arm])


def _solved_at(where: str, solved_at: Any) -> float | None:
    if solved_at is None:
        return None
    if not (_is_number(solved_at) and math.isfinite(solved_at)):
        raise UsageError(
            f"{where}: SOLVED_AT must be a finite number, the final METRIC value at which a seed "
            f"counts as solving; got {solved_at!r}"
        )
    return float(solved_at)


def _blocks(where: str, arms: dict[str, dict[str, Any]], block_by: Any) -> dict[str, str]:
    """Each arm's block: the value its overrides give the BLOCK_BY key, as a string."""
    if not isinstance(block_by, str) or not block_by:
        raise UsageError(f"{where}: BLOCK_BY must name a config key, got {block_by!r}")
    set_keys = sorted({key for overrides in arms.values() for key in overrides})
    if block_by not in set_keys:
        close = difflib.get_close_matches(block_by, set_keys, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"{where}: BLOCK_BY {block_by!r} is not a key any arm sets{hint}; the arms set: "
            f"{', '.join(set_keys)}"
        )
    unset = [arm for arm, overrides in arms.items() if block_by not in overrides]
    if unset:
        raise UsageError(
            f"{where}: arm {unset[0]!r} does not set BLOCK_BY key {block_by!r}: every arm must, "
            "to say which block it is in"
        )
    return {arm: str(overrides[block_by]) for arm, overrides in arms.items()}


def _block_baselines(
    where: str,
    arms: dict[str, dict[str, Any]],
    block_by: str,
    block_of: dict[str, str],
    baseline: Any,
) -> dict[str, str]:
    """BASELINE as {block: its baseline arm}, checked to name one arm of each block."""
    blocks = list(dict.fromkeys(block_of.values()))
    if not isinstance(baseline, Mapping):
        raise UsageError(
            f"{where}: with BLOCK_BY, BASELINE maps each block (a value of {block_by!r}) to its "
            f"baseline arm, e.g. {{{blocks[0]!r}: <arm>}}; got {baseline!r}"
        )
    named = {str(block): arm for block, arm in baseline.items()}
    for block in named:
        if block not in blocks:
            raise UsageError(
                f"{where}: BASELINE names block {block!r}, which no arm is in; blocks "
                f"({block_by}): {', '.join(blocks)}"
            )
    for block in blocks:
        members = [arm for arm in arms if block_of[arm] == block]
        if block not in named:
            raise UsageError(
                f"{where}: block {block!r} ({block_by}) has no baseline in BASELINE; its arms: "
                f"{', '.join(members)}"
            )
        arm = named[block]
        if arm not in arms:
            close = difflib.get_close_matches(str(arm), members, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"{where}: BASELINE of block {block!r} is {arm!r}, not an arm{hint}; the block's "
                f"arms: {', '.join(members)}"
            )
        if block_of[arm] != block:
            raise UsageError(
                f"{where}: BASELINE of block {block!r} is arm {arm!r}, which is in block "
                f"{block_of[arm]!r}; the block's arms: {', '.join(members)}"
            )
    return {block: named[block] for block in blocks}


def _claim(
    where: str,
    claim: Any,
    arms: dict[str, dict[str, Any]],
    block_by: str | None,
    block_of: dict[str, str],
    solved_at: float | None,
) -> Claim:
    relations = ", ".join(repr(r) for r in DIFFERENCE_RELATIONS)
    solves = " | ".join(repr(r) for r in PROPORTION_RELATIONS)
    form = (
        f"(arm, relation, arm) with relation {relations}, or "
        f"(arm, {EQUIVALENCE_RELATION!r}, arm, margin), or (arm, {solves}, arm or rate), or "
        f"((arm, its baseline), {' | '.join(repr(r) for r in DROP_RELATIONS)}, (arm, its baseline))"
    )
    relation = claim[1] if isinstance(claim, tuple | list) and len(claim) in (3, 4) else None
    if relation in DROP_RELATIONS and len(claim) == 3:
        return _drop_claim(where, claim, arms, block_by, block_of)
    if relation not in RELATIONS or len(claim) != (4 if relation == EQUIVALENCE_RELATION else 3):
        raise UsageError(f"{where}: claim {claim!r} must be {form}")
    if not _is_arm(claim[0], arms):
        raise UsageError(f"{where}: claim names arm {claim[0]!r}; valid: {', '.join(arms)}")
    if relation in PROPORTION_RELATIONS:
        if solved_at is None:
            raise UsageError(
                f"{where}: claim {claim!r} counts the seeds that solve, but the study declares "
                "no SOLVED_AT (the final METRIC value at which a seed solves: reached from above "
                "when HIGHER_IS_BETTER, from below otherwise)"
            )
        if _is_number(claim[2]):
            return _rate_claim(where, claim)
    margin = claim[3] if len(claim) == 4 else None
    if margin is not None and not (_is_number(margin) and math.isfinite(margin) and margin > 0):
        raise UsageError(
            f"{where}: claim {claim!r}: the margin of {EQUIVALENCE_RELATION!r} must be a number "
            f"> 0 in the metric's units, got {margin!r}"
        )
    if not _is_arm(claim[2], arms):
        raise UsageError(f"{where}: claim names arm {claim[2]!r}; valid: {', '.join(arms)}")
    if claim[0] == claim[2]:
        raise UsageError(f"{where}: claim {claim!r} compares arm {claim[0]!r} with itself")
    if block_of[claim[0]] != block_of[claim[2]]:
        raise UsageError(
            f"{where}: claim {claim!r} compares arms of different blocks ({block_by} "
            f"{block_of[claim[0]]!r} vs {block_of[claim[2]]!r}); a claim compares arms of one block"
        )
    return Claim(claim[0], relation, claim[2], None if margin is None else float(margin))


def _drop_claim(
    where: str,
    claim: Any,
    arms: dict[str, dict[str, Any]],
    block_by: str | None,
    block_of: dict[str, str],
) -> Claim:
    """((arm, baseline), "drops more than" | "drops less than", (arm, baseline))."""
    pairs = (claim[0], claim[2])
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise UsageError(
                f"{where}: claim {claim!r}: each side of {claim[1]!r} is a pair (arm, the arm it "
                f"drops from), got {pair!r}"
            )
        for arm in pair:
            if not _is_arm(arm, arms):
                raise UsageError(f"{where}: claim names arm {arm!r}; valid: {', '.join(arms)}")
        if pair[0] == pair[1]:
            raise UsageError(f"{where}: claim {claim!r} pairs arm {pair[0]!r} with itself")
        if block_of[pair[0]] != block_of[pair[1]]:
            raise UsageError(
                f"{where}: claim {claim!r}: the pair {tuple(pair)!r} spans blocks ({block_by} "
                f"{block_of[pair[0]]!r} vs {block_of[pair[1]]!r}); a drop is within one block"
            )
    if tuple(pairs[0]) == tuple(pairs[1]):
        raise UsageError(f"{where}: claim {claim!r} compares a drop with itself")
    (candidate, candidate_from), (other, other_from) = pairs
    return Claim(candidate, claim[1], other, drop_from=(candidate_from, other_from))


def _rate_claim(where: str, claim: Any) -> Claim:
    """(arm, "solves more often than" | "solves less often than", rate): one arm against a
    stated fraction of seeds."""
    rate = claim[2]
    if not (math.isfinite(rate) and 0 < rate < 1):
        raise UsageError(
            f"{where}: claim {claim!r}: a rate to solve more or less often than must be a "
            f"fraction of seeds strictly between 0 and 1, got {rate!r}"
        )
    return Claim(claim[0], claim[1], None, rate=float(rate))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _is_arm(value: Any, arms: dict[str, dict[str, Any]]) -> bool:
    return isinstance(value, str) and value in arms
