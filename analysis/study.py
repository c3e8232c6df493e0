"""A study's declaration, and what its runs add up to: `summary.json`.

`StudySpec` is what a study file declares (runtime/study_spec.py reads and checks it);
`summarize_study` reads every run directory of a study and returns the summary the reports are
rendered from: per arm the primary metric (final and best) and every eval metric over seeds,
each arm against its baseline (the baseline of its block, when the study has blocks), the
claims' verdicts, learning curves, compute and provenance.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis import proportions, stats
from analysis.runs import FINISHED, Run, eval_file, is_run, jsonable, load_run, read_json

DIFFERENCE_RELATIONS = ("beats", "loses to")  # (arm, relation, other arm): a Welch t-test
EQUIVALENCE_RELATION = "matches"  # (arm, "matches", other arm, margin): a TOST
# (arm, relation, other arm or rate) on the fraction of seeds that reach SOLVED_AT: Boschloo's
# exact test against another arm, the exact binomial test against a rate; relation -> direction.
PROPORTION_RELATIONS = {"solves more often than": "more", "solves less often than": "less"}
# ((arm, its baseline), relation, (arm, its baseline)): one pair's per-seed drop against the
# other's, a Welch t-test; relation -> the direction claimed.
DROP_RELATIONS = {"drops more than": "larger", "drops less than": "smaller"}
RELATIONS = (*DIFFERENCE_RELATIONS, EQUIVALENCE_RELATION, *PROPORTION_RELATIONS, *DROP_RELATIONS)
RUNS_DIR = "runs"
CHECKPOINT_DIR = "checkpoints"  # runtime.checkpoint.CHECKPOINT_DIR (which imports orbax)
# Training FLOPs per token: the backward pass costs about twice the forward (Kaplan et al.).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3


@dataclasses.dataclass(frozen=True)
class Claim:
    candidate: str
    relation: str  # one of RELATIONS
    other: str | None  # the arm compared with; None for a solve-rate claim against `rate`
    margin: float | None = None  # "matches" only: the largest difference that counts as none
    rate: float | None = None  # a solve-rate claim on one arm only: the rate it is held to
    # A drop claim only: the arms `candidate` and `other` drop from (their baselines)
    drop_from: tuple[str, str] | None = None

    @property
    def text(self) -> str:
        if self.drop_from is not None:
            return (
                f"the drop from `{self.drop_from[0]}` to `{self.candidate}` "
                f"{'exceeds' if self.relation == 'drops more than' else 'is below'} "
                f"the drop from `{self.drop_from[1]}` to `{self.other}`"
            )
        if self.other is None:
            fewer = "fewer" if self.relation == "solves less often than" else "more"
            return f"arm `{self.candidate}` solves in {fewer} than {100 * self.rate:g}% of seeds"
        within = f" within ±{self.margin:g}" if self.relation == EQUIVALENCE_RELATION else ""
        return f"arm `{self.candidate}` {self.relation} arm `{self.other}`{within}"


@dataclasses.dataclass(frozen=True)
class StudySpec:
    name: str  # the file's stem: "mqar_mixers"
    path: str
    arms: dict[str, dict[str, Any]]  # arm -> config overrides
    baselines: dict[str, str]  # block -> the arm the block's other arms are compared with
    block_of: dict[str, str]  # arm -> its block; every arm in one block, "", without BLOCK_BY
    block_by: str | None  # the override key whose value is an arm's block; None: no blocks
    seeds: int
    metric: str
    higher_is_better: bool
    hypothesis: str
    claims: tuple[Claim, ...]
    settings: tuple[str, ...]  # () when the study has no named settings
    # A seed solves when its final metric reaches this (>= when higher is better, <= when lower
    # is); None when the study declares no SOLVED_AT (then it has no solve-rate claims).
    solved_at: float | None = None
    # arm -> {config key: the arm whose run of the same seed the key names} (`run_of`)
    run_refs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # arm -> the arm whose runs it quantizes (launch.quantize), for post-training arms
    quantized: dict[str, str] = dataclasses.field(default_factory=dict)

    def needs(self, arm: str) -> list[str]:
        """The arms whose runs of a seed `arm`'s run of that seed needs."""
        return list(dict.fromkeys(self.run_refs.get(arm, {}).values()))

    @property
    def baseline(self) -> str | None:
        """The study's one baseline; None when it has blocks, each with its own."""
        return None if self.block_by else self.baselines[""]

    def baseline_of(self, arm: str) -> str:
        return self.baselines[self.block_of[arm]]

    def config_arg(self, arm: str, setting: str | None) -> str:
        """The `--config=` value that builds one arm, as launch.train takes it."""
        return f"{self.path}:{arm}" + (f",{setting}" if setting else "")


def arm_dir(study_dir: str, arm: str) -> str:
    return os.path.join(study_dir, RUNS_DIR, arm)


def run_dir(study_dir: str, arm: str, seed: int) -> str:
    return os.path.join(arm_dir(study_dir, arm), f"seed_{seed}")


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a run's config without its seed: equal for every seed of one arm."""
    without_seed = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(without_seed, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------- one arm
def checkpoint_bytes(workdir: str) -> int | None:
    """Bytes on disk of the run's newest checkpoint (every file of it); None without one."""
    root = os.path.join(workdir, CHECKPOINT_DIR)
    steps = [int(n) for n in os.listdir(root) if n.isdigit()] if os.path.isdir(root) else []
    if not steps:
        return None
    directory = os.path.join(root, str(max(steps)))
    return sum(
        os.path.getsize(os.path.join(here, name))
        for here, _, names in os.walk(directory)
        for name in names
    )


def _wall_seconds(run: Run) -> float:
    """Time spent in launch.train over all attempts of the run; an attempt that trained a group
    of seeds in one process (`launch.train --seeds`) counts its share of that time."""
    total = 0.0
    for attempt in (run.manifest or {}).get("attempts", []):
        if attempt.get("start_time") and attempt.get("end_time"):
            start = datetime.datetime.fromisoformat(attempt["start_time"])
            seconds = (datetime.datetime.fromisoformat(attempt["end_time"]) - start).total_seconds()
            total += seconds / len((attempt.get("group") or {}).get("seeds") or [run])
    return total


def compute_used(runs: Sequence[Run]) -> dict[str, float]:
    """Steps, tokens, seconds in launch.train and training FLOPs of `runs`, summed."""
    steps = tokens = flops = wall = 0.0
    for run in runs:
        manifest = run.manifest or {}
        run_tokens = run.last_step * manifest.get("tokens_per_step", 0)
        steps += run.last_step
        tokens += run_tokens
        flops += (
            TRAINING_FLOPS_PER_FORWARD_FLOP
            * manifest.get("model", {}).get("flops_per_token", 0)
            * run_tokens
        )
        wall += _wall_seconds(run)
    return {"steps": int(steps), "tokens": int(tokens), "wall_seconds": wall, "flops": flops}


def _curve(runs: Sequence[Run], metric: str) -> dict[str, list]:
    """Mean over seeds with a min-max band, at the steps every seed logged (`runs` non-empty)."""
    by_run = [dict(zip(*run.curve(metric), strict=True)) for run in runs]
    steps = sorted(set.intersection(*(set(c) for c in by_run)))
    values = np.array([[c[s] for s in steps] for c in by_run]).reshape(len(by_run), len(steps))
    return {
        "steps": steps,
        "mean": values.mean(axis=0).tolist(),
        "lo": values.min(axis=0).tolist(),
        "hi": values.max(axis=0).tolist(),
        "n": [len(by_run)] * len(steps),
        "band": "min-max over seeds",
    }


def _arm_summary(
    spec: StudySpec, study_dir: str, arm: str, seeds: Sequence[int], confidence: float
) -> tuple[dict[str, Any], list[Run]]:
    dirs = {s: run_dir(study_dir, arm, s) for s in seeds}
    found = {s: load_run(d) for s, d in dirs.items() if is_run(d)}
    completed_seeds = {s: r for s, r in found.items() if r.status in FINISHED}
    completed = list(completed_seeds.values())
    names = sorted({m for r in completed for m in r.metric_names() if m.startswith("eval/")})
    metrics = {}
    for name in [spec.metric, *(n for n in names if n != spec.metric)]:
        finals = [v for r in completed if (v := r.final(name)) is not None]
        if not finals:
            continue
        entry = {"final": stats.summarize(finals), "final_values": finals}
        if name == spec.metric:
            # Which seed each final value is (drop claims pair arms seed by seed).
            entry["final_seeds"] = [
                s for s, r in completed_seeds.items() if r.final(name) is not None
            ]
            best = [r.best(name, spec.higher_is_better) for r in completed]
            entry.update(best=stats.summarize(best), best_values=best)
            if spec.solved_at is not None:
                entry["solved"] = proportions.solve_fraction(
                    finals, spec.solved_at, spec.higher_is_better, confidence
                )
        metrics[name] = entry
    sizes = [b for r in completed if (b := checkpoint_bytes(r.workdir)) is not None]
    hashes = sorted({config_hash(r.config) for r in found.values() if r.config})
    summary = {
        "overrides": spec.arms[arm],
        "config_hash": hashes[0] if len(hashes) == 1 else None,
        "config_hashes": hashes,
        "seeds_planned": len(seeds),
        "seeds_completed": len(completed),
        "runs": [
            {
                "seed": s,
                "workdir": dirs[s],
                "status": found[s].status if s in found else "not started",
                "last_step": found[s].last_step if s in found else 0,
                "wall_seconds": _wall_seconds(found[s]) if s in found else 0.0,
                "checkpoint_bytes": checkpoint_bytes(dirs[s]) if s in found else None,
            }
            for s in seeds
        ],
        "metrics": metrics,
        # Its completed runs' newest checkpoints, mean bytes: None when none has one.
        "checkpoint_bytes": float(np.mean(sizes)) if sizes else None,
        "evaluation": _evaluation_summary(completed),
        "curves": {spec.metric: _curve(completed, spec.metric)} if completed else {},
        "compute": compute_used(list(found.values())),
    }
    return summary, list(found.values())


def _evaluation_summary(completed: Sequence[Run]) -> dict[str, Any]:
    """The evaluation suites' headline numbers (eval/summary.json) over the seeds that have
    them, and what the suites could not do."""
    summaries = [s for r in completed if (s := read_json(eval_file(r.workdir, "summary")))]
    names = sorted({k for s in summaries for k in s.get("headline", {})})
    headline = {}
    for name in names:
        values = [v for s in summaries if (v := s["headline"].get(name)) is not None]
        if values:
            headline[name] = {"final": stats.summarize(values), "final_values": values}
    not_applicable = {}
    for s in summaries:
        not_applicable.update(s.get("not_applicable", {}))
    return {
        "runs": len(summaries),
        # The arm's completed runs: more than `runs` when some have no eval/ (yet).
        "of_runs": len(completed),
        "headline": headline,
        "not_applicable": not_applicable,
    }


# ------------------------------------------------------------------------- across arms
def _final_values(arm_summary: dict[str, Any], metric: str) -> list[float]:
    return arm_summary["metrics"].get(metric, {}).get("final_values", [])


def _compare(
    spec: StudySpec, arms: dict[str, Any], baseline: str, candidate: str, confidence: float
) -> tuple[stats.Comparison | None, str | None]:
    base, cand = (
        _final_values(arms[baseline], spec.metric),
        _final_values(arms[candidate], spec.metric),
    )
    if len(base) < 2 or len(cand) < 2:
        return None, (
            f"not tested: {candidate} has {len(cand)} and {baseline} {len(base)} completed seeds "
            "with the metric; a test needs at least 2 each"
        )
    return stats.compare(base, cand, spec.higher_is_better, confidence), None


def _comparisons(spec: StudySpec, arms: dict[str, Any], confidence: float) -> dict[str, Any]:
    """Every arm against its baseline (its block's, with blocks: arms of different blocks
    are never compared), Holm-adjusted together over every comparison made, all blocks."""
    out = {}
    for arm in arms:
        baseline = spec.baseline_of(arm)
        if arm != baseline:
            comparison, note = _compare(spec, arms, baseline, arm, confidence)
            out[arm] = {
                "baseline": baseline,
                "comparison": comparison,
                "holm_p": None,
                "note": note,
            }
    tested = [a for a in out if out[a]["comparison"] is not None]
    adjusted = stats.holm([out[a]["comparison"].welch_p for a in tested]) if tested else []
    for arm, p in zip(tested, adjusted, strict=True):
        out[arm]["holm_p"] = float(p)
    return out


def _claims(
    spec: StudySpec, arms: dict[str, Any], confidence: float, alpha: float
) -> list[dict[str, Any]]:
    """The hypothesis' claims, each tested, then judged on p-values Holm-adjusted together
    (a "matches" claim's p is its TOST p, a solve-rate claim's its one-sided exact p: each
    claim is one test in the family)."""
    out = [_tested_claim(spec, claim, arms, confidence, alpha) for claim in spec.claims]
    tested = [c for c in out if "verdict" not in c]
    p_values = [_claim_p(c) for c in tested]
    adjusted = stats.holm(p_values) if tested else []
    for i, (entry, p) in enumerate(zip(tested, adjusted, strict=True)):
        entry["adjusted_p"] = float(p)
        names = (entry["candidate"], entry["other"])
        if entry["relation"] in PROPORTION_RELATIONS:
            # The claim stated the other way round, in its place in the same family.
            opposite = [*p_values[:i], entry["proportions"].p_opposite, *p_values[i + 1 :]]
            entry["adjusted_p_opposite"] = float(stats.holm(opposite)[i])
            entry["verdict"] = proportions.proportion_verdict(
                entry["proportions"], float(p), entry["adjusted_p_opposite"], alpha, names
            )
        elif entry["relation"] == EQUIVALENCE_RELATION:
            entry["verdict"] = stats.equivalence_verdict(
                entry["equivalence"], float(p), alpha, names
            )
        elif entry["relation"] in DROP_RELATIONS:
            entry["verdict"] = drop_verdict(entry, float(p), alpha)
        else:
            direction = "better" if entry["relation"] == "beats" else "worse"
            entry["verdict"] = stats.verdict(entry["comparison"], float(p), direction, alpha, names)
    return out


def _tested_claim(
    spec: StudySpec, claim: Claim, arms: dict[str, Any], confidence: float, alpha: float
) -> dict[str, Any]:
    """One claim's test, before the Holm adjustment; with a verdict already when it could not
    be tested."""
    entry = {
        "candidate": claim.candidate,
        "relation": claim.relation,
        "other": claim.other,
        "metric": spec.metric,
        "text": f"{claim.text} on {spec.metric}",
        "comparison": None,
        "adjusted_p": None,
    }
    named = [a for a in (claim.candidate, claim.other) if a is not None]
    if claim.relation in PROPORTION_RELATIONS:
        solves = "≥" if spec.higher_is_better else "≤"
        entry.update(
            text=f"{claim.text} (a seed solves when its final {spec.metric} {solves} "
            f"{spec.solved_at:g})",
            rate=claim.rate,
            solved_at=spec.solved_at,
            proportions=None,
            adjusted_p_opposite=None,
        )
    if claim.relation == EQUIVALENCE_RELATION:
        entry.update(margin=claim.margin, equivalence=None)
    if claim.drop_from is not None:
        named += list(claim.drop_from)
        entry.update(candidate_from=claim.drop_from[0], other_from=claim.drop_from[1], drops=None)
    if any(arm not in arms for arm in named):
        entry["verdict"] = stats.Verdict(
            "inconclusive", "not run: an arm of the claim was left out (--arms)"
        )
        return entry
    if claim.relation in PROPORTION_RELATIONS:
        test, note = _proportion_test(spec, claim, arms, alpha)
        entry["proportions"] = test
        if test is None:
            entry["verdict"] = stats.Verdict("inconclusive", note)
        return entry
    if claim.drop_from is not None:
        drops = {
            arm: _drops(spec, arms, arm, start)
            for arm, start in zip((claim.candidate, claim.other), claim.drop_from, strict=True)
        }
        entry["drops"] = drops
        comparison, note = _compare_drops(drops, claim.candidate, claim.other, confidence)
    else:
        comparison, note = _compare(spec, arms, claim.other, claim.candidate, confidence)
    entry["comparison"] = comparison
    if comparison is None:
        entry["verdict"] = stats.Verdict("inconclusive", note)
    elif claim.relation == EQUIVALENCE_RELATION:
        entry["equivalence"] = stats.equivalence_test(
            _final_values(arms[claim.other], spec.metric),
            _final_values(arms[claim.candidate], spec.metric),
            claim.margin,
            alpha,
        )
    return entry


def _drops(spec: StudySpec, arms: dict[str, Any], arm: str, start: str) -> dict[str, Any]:
    """Arm `arm`'s drop from arm `start`, seed by seed: how much worse its final METRIC is than
    `start`'s of the same seed (positive: worse), for the seeds both completed."""

    def by_seed(name: str) -> dict[int, float]:
        entry = arms[name]["metrics"].get(spec.metric, {})
        return dict(zip(entry.get("final_seeds", []), entry.get("final_values", []), strict=True))

    after, before = by_seed(arm), by_seed(start)
    seeds = [s for s in after if s in before]
    sign = 1.0 if spec.higher_is_better else -1.0
    return {"from": start, "seeds": seeds, "values": [sign * (before[s] - after[s]) for s in seeds]}


def _compare_drops(
    drops: dict[str, dict[str, Any]], candidate: str, other: str, confidence: float
) -> tuple[stats.Comparison | None, str | None]:
    """The candidate pair's per-seed drops against the other pair's (higher: a larger drop)."""
    cand, base = drops[candidate]["values"], drops[other]["values"]
    if len(cand) < 2 or len(base) < 2:
        return None, (
            f"not tested: {len(cand)} seeds of {candidate} and {len(base)} of {other} have a drop "
            "(the seed completed in both arms of the pair); a test needs at least 2 each"
        )
    return stats.compare(base, cand, higher_is_better=True, confidence=confidence), None


def drop_verdict(entry: dict[str, Any], adjusted_p: float, alpha: float) -> stats.Verdict:
    """A drop claim's verdict: supported when the candidate pair's mean drop differs from the
    other's the claimed way at Holm-adjusted p < alpha, refuted when it differs the other way."""
    c = entry["comparison"]
    claimed = DROP_RELATIONS[entry["relation"]]
    seen = "larger" if c.difference > 0 else "smaller"
    numbers = (
        f"drop to {entry['candidate']} {c.candidate_mean:+.4g} vs to {entry['other']} "
        f"{c.baseline_mean:+.4g} (mean over seeds, worse is positive), difference "
        f"{c.difference:+.3g}, Welch p {c.welch_p:.2g} (Holm-adjusted {adjusted_p:.2g}, alpha "
        f"{alpha:g})"
    )
    if math.isnan(adjusted_p):
        return stats.Verdict("inconclusive", f"could not be tested: {numbers}")
    if adjusted_p >= alpha or c.difference == 0:
        return stats.Verdict("inconclusive", f"not significant: {numbers}; {c.resolution}")
    ci = f"{c.confidence:.0%} CI of difference [{c.welch_ci[0]:+.3g}, {c.welch_ci[1]:+.3g}]"
    if seen == claimed:
        return stats.Verdict("supported", f"significantly {seen} drop: {numbers}; {ci}")
    return stats.Verdict("refuted", f"claimed {claimed}, but significantly {seen}: {numbers}; {ci}")


def _proportion_test(
    spec: StudySpec, claim: Claim, arms: dict[str, Any], alpha: float
) -> tuple[proportions.ProportionTest | None, str | None]:
    """A solve-rate claim's exact test on its arms' solving seeds; None and why when an arm has
    no completed seed with the metric."""
    named = [a for a in (claim.candidate, claim.other) if a is not None]
    fractions = [arms[a]["metrics"].get(spec.metric, {}).get("solved") for a in named]
    if any(f is None for f in fractions):
        missing = ", ".join(a for a, f in zip(named, fractions, strict=True) if f is None)
        return None, f"not tested: {missing} has no completed seed with the metric"
    direction = PROPORTION_RELATIONS[claim.relation]
    if claim.other is None:
        return proportions.rate_test(fractions[0], claim.rate, direction, alpha), None
    return proportions.fraction_comparison(fractions[0], fractions[1], direction, alpha), None


def _claim_p(entry: dict[str, Any]) -> float:
    """The unadjusted p-value a claim's verdict rests on."""
    if entry["relation"] in PROPORTION_RELATIONS:
        return entry["proportions"].p
    if entry["relation"] == EQUIVALENCE_RELATION:
        return entry["equivalence"].p
    return entry["comparison"].welch_p


def _blocks(spec: StudySpec, arms: Sequence[str]) -> dict[str, Any]:
    """Each block that ran: its baseline and its arms (baseline first); {} without blocks."""
    if not spec.block_by:
        return {}
    blocks: dict[str, Any] = {}
    for arm in arms:
        block = spec.block_of[arm]
        baseline = spec.baselines[block]
        entry = blocks.setdefault(block, {"baseline": baseline, "arms": [baseline]})
        if arm != baseline:
            entry["arms"].append(arm)
    return blocks


def overall_verdict(claims: Sequence[dict[str, Any]]) -> str:
    """Supported when every claim is, refuted when any is, inconclusive otherwise."""
    outcomes = [c["verdict"].outcome for c in claims]
    if outcomes and all(o == "supported" for o in outcomes):
        return "supported"
    if "refuted" in outcomes:
        return "refuted"
    return "inconclusive"


def _provenance(runs: Sequence[Run], arms: dict[str, Any]) -> dict[str, Any]:
    manifests = [r.manifest for r in runs if r.manifest]
    gits = [m.get("git", {}) for m in manifests]
    datasets = {}
    for m in manifests:
        for name, fingerprint in m.get("datasets", {}).items():
            datasets.setdefault(name, fingerprint)
    return {
        "commits": sorted({g.get("commit") or "unknown" for g in gits}),
        "dirty": any(g.get("dirty") for g in gits),
        "datasets": datasets,
        "dataset_leaks": dataset_leaks(manifests),
        "config_hashes": {a: s["config_hash"] for a, s in arms.items()},
        "versions": manifests[0].get("versions", {}) if manifests else {},
    }


def dataset_leaks(manifests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every dataset variant a run used whose evaluation split overlaps its train split (the
    fingerprint's `overlap`, see data/overlap.py), from every run: `datasets` keeps only the
    first fingerprint of each name, and a leak in one arm's variant must still be reported."""
    leaks: dict[tuple[str, Any], dict[str, Any]] = {}
    for m in manifests:
        for name, fingerprint in m.get("datasets", {}).items():
            overlap = fingerprint.get("overlap") or {}
            if not overlap.get("leak"):
                continue
            leaks.setdefault((name, fingerprint.get("config_name")), {
                "dataset": name,
                "variant": fingerprint.get("config_name"),
                "jaccard_threshold": overlap["method"]["jaccard_threshold"],
                "eval": {
                    split: {
                        "examples": e["examples"],
                        "exact": e["exact"]["count"],
                        "near": e["near"]["count"],
                    }
                    for split, e in overlap["eval"].items()
                },
            })  # fmt: skip
    return list(leaks.values())


def summarize_study(
    spec: StudySpec,
    study_dir: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    setting: str | None,
    overrides: Sequence[str],
    failed_runs: Sequence[dict[str, Any]],
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The study's summary as strict JSON (NaN as null); `failed_runs` carries each failed
    run's arm, seed, workdir, status and log tail, as the runner saw them."""
    arm_summaries, runs = {}, []
    for arm in arms:
        arm_summaries[arm], arm_runs = _arm_summary(spec, study_dir, arm, seeds, confidence)
        runs += arm_runs
    claims = _claims(spec, arm_summaries, confidence, alpha)
    totals = [s["compute"] for s in arm_summaries.values()]
    summary = {
        "study": spec.name,
        "study_file": spec.path,
        "setting": setting,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hypothesis": spec.hypothesis,
        "metric": spec.metric,
        "higher_is_better": spec.higher_is_better,
        "solved_at": spec.solved_at,
        "baseline": spec.baseline,
        "block_by": spec.block_by,
        "blocks": _blocks(spec, arms),
        "confidence": confidence,
        "alpha": alpha,
        "seeds": list(seeds),
        "overrides": list(overrides),
        "verdict": overall_verdict(claims),
        "claims": claims,
        "arms": arm_summaries,
        "comparisons": _comparisons(spec, arm_summaries, confidence),
        "compute": {
            k: sum(t[k] for t in totals) for k in ("steps", "tokens", "wall_seconds", "flops")
        },
        "provenance": _provenance(runs, arm_summaries),
        "failed_runs": list(failed_runs),
    }
    return jsonable(summary)
