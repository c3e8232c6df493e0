"""What each section of a study's report says, as blocks (analysis/report/blocks.py): the
verdicts first, then the arms, other metrics, evaluation suites, plots, compute, provenance and
failed runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.report.blocks import (
    Alert,
    Block,
    Bullets,
    Claim,
    Claims,
    Heading,
    Headline,
    Image,
    Paragraph,
    Preformatted,
    Table,
)
from analysis.report.formatting import (
    DASH,
    HASH_CHARS,
    ci_bounds,
    fmt_duration,
    fmt_large,
    fmt_number,
    fmt_p,
    fmt_percent,
    fmt_seed_values,
    fmt_signed,
    fmt_time,
    fraction_ci,
    mean_pm,
)
from analysis.summary_reader import (
    arm_entry,
    arm_label,
    arm_order,
    as_float,
    as_list,
    as_mapping,
    as_pair,
    confidence_label,
    direction,
    is_baseline,
    metric_stats,
    study_blocks,
)

CURVES_PNG = "learning_curves.png"
PRIMARY_PNG = "primary_metric.png"


def report_blocks(summary: Mapping[str, Any]) -> list[Block]:
    """The report, section by section, as blocks for `render_markdown` and `render_html`."""
    return [
        *_header(summary),
        *_arms_section(summary),
        *_other_metrics_section(summary),
        *_evaluation_section(summary),
        *_plots_section(summary),
        *_compute_section(summary),
        *_provenance_section(summary),
        *_failed_section(summary),
    ]


def _header(summary: Mapping[str, Any]) -> list[Block]:
    """Title, what was run, then the verdicts: what a person must see in the first second."""
    arms = arm_order(summary)
    seeds = as_list(summary.get("seeds"))
    facts = [f"created {fmt_time(summary.get('created'))}"]
    if summary.get("study_file"):
        facts.append(f"`{summary['study_file']}`")
    if summary.get("setting"):
        facts.append(f"setting `{summary['setting']}`")
    facts.append(f"{len(arms)} arms × {len(seeds)} seeds")
    facts.append(f"primary metric `{summary.get('metric') or DASH}` ({direction(summary)})")
    if summary.get("baseline"):
        facts.append(f"baseline `{summary['baseline']}`")
    elif summary.get("block_by"):
        n = len(study_blocks(summary))
        facts.append(f"blocked by `{summary['block_by']}`: {n} blocks, a baseline each")
    blocks: list[Block] = [
        Heading(1, f"Study report: {summary.get('study') or 'unnamed study'}"),
        Paragraph(" · ".join(facts), "meta"),
    ]
    claims = [_claim(c) for c in as_list(summary.get("claims"))]
    blocks.append(Heading(2, "Verdict", "verdict"))
    hypothesis = summary.get("hypothesis") or "not stated"
    overall = summary.get("verdict")
    if isinstance(overall, str) and overall:
        # The hypothesis as a whole, as the aggregator judged it from its claims.
        tally = _tally(claims) if claims else "no claims"
        blocks.append(Headline(overall.lower(), f"Hypothesis: {hypothesis}", tally))
    else:
        blocks.append(Paragraph(f"Hypothesis: {hypothesis}", "lead"))
    if claims:
        blocks.append(Claims(tuple(claims)))
        blocks.append(Paragraph(_claims_note(summary), "muted"))
    else:
        blocks.append(Paragraph("No claims were declared: this study only describes its arms."))
    blocks.extend(Alert(text) for text in _alerts(summary))
    return blocks


def _claims_note(summary: Mapping[str, Any]) -> str:
    note = "p-values Holm-adjusted across the study's claims."
    relations = {as_mapping(c).get("relation") for c in as_list(summary.get("claims"))}
    if any(str(r).startswith("solves") for r in relations):
        note += (
            " A claim on how often an arm solves counts the seeds that reach the threshold and "
            "is tested one-sided and exactly (Boschloo's test between two arms, the binomial "
            "test against a rate), with Clopper-Pearson intervals of each fraction: at a few "
            "seeds these are wide, and the reason says what the seeds could resolve."
        )
    return note


def _claim(claim: Any) -> Claim:
    claim = as_mapping(claim)
    verdict = as_mapping(claim.get("verdict"))
    text = claim.get("text")
    if not text:
        relation = claim.get("relation") or "vs"
        text = (
            f"`{claim.get('candidate', '?')}` {relation} `{claim.get('other', '?')}`"
            f" on {claim.get('metric') or 'the primary metric'}"
        )
    outcome = str(verdict.get("outcome") or "unknown").lower()
    return Claim(outcome, str(text), str(verdict.get("reason") or "no reason given"))


def _tally(claims: Sequence[Claim]) -> str:
    counts: dict[str, int] = {}
    for claim in claims:
        counts[claim.outcome] = counts.get(claim.outcome, 0) + 1
    parts = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    noun = "claim" if len(claims) == 1 else "claims"
    return f"{len(claims)} {noun}: {parts}"


def _alerts(summary: Mapping[str, Any]) -> list[str]:
    """What undermines the numbers, shown under the verdicts and again where it belongs."""
    alerts = []
    failed = as_list(summary.get("failed_runs"))
    if failed:
        noun = "run" if len(failed) == 1 else "runs"
        alerts.append(f"{len(failed)} {noun} did not complete: see Failed runs.")
    return alerts + _provenance_warnings(summary)


def _provenance_warnings(summary: Mapping[str, Any]) -> list[str]:
    provenance = as_mapping(summary.get("provenance"))
    commits = as_list(provenance.get("commits"))
    warnings = []
    if len(commits) > 1:
        warnings.append(
            f"The runs come from {len(commits)} different code commits: "
            "the arms may not have run the same code."
        )
    for arm in arm_order(summary):
        n = len(as_list(arm_entry(summary, arm).get("config_hashes")))
        if n > 1:
            warnings.append(f"Arm `{arm}` ran with {n} different configs: its seeds differ.")
    if provenance.get("dirty"):
        warnings.append(
            "At least one run had uncommitted changes: its code is not recorded in any commit."
        )
    warnings.extend(_leak_warning(leak) for leak in as_list(provenance.get("dataset_leaks")))
    return warnings


def _leak_warning(leak: Any) -> str:
    """A dataset whose evaluation examples also occur in its train split (`dataset_leaks`)."""
    leak = as_mapping(leak)
    parts = []
    for split, counts in as_mapping(leak.get("eval")).items():
        counts = as_mapping(counts)
        exact, near = counts.get("exact") or 0, counts.get("near") or 0
        if exact or near:
            parts.append(
                f"{exact} of {counts.get('examples')} `{split}` examples are exact copies of "
                f"training examples and {near} more near-duplicates "
                f"(Jaccard >= {leak.get('jaccard_threshold')})"
            )
    return (
        f"Dataset `{leak.get('dataset')}` (variant `{leak.get('variant')}`) leaks: "
        + "; ".join(parts)
        + ": evaluation on it partly measures memorization (`python -m launch.datacheck "
        f"--data={leak.get('dataset')}` with the runs' data parameters lists the examples)."
    )


def _arms_section(summary: Mapping[str, Any]) -> list[Block]:
    metric = summary.get("metric") or ""
    conf = confidence_label(summary)
    measured = (
        f"Final `{metric}` ({direction(summary)}) over seeds: mean ± half-width of the "
        f"{conf} t-interval, and each seed's final value in seed order (a mean hides arms whose "
        "seeds either learn or do not)."
    )
    solved_at = as_float(summary.get("solved_at"))
    if math.isfinite(solved_at):
        measured += (
            f" Solved: the seeds whose final value is {_solves_symbol(summary)} {solved_at:g} "
            f"(the study's SOLVED_AT), with the {conf} Clopper-Pearson exact interval of the "
            "arm's solve rate, wide at a few seeds (3 of 3 leaves [0.29, 1] at 95%)."
        )
    arms = arm_order(summary)
    out: list[Block] = [Heading(2, "Arms", "arms")]
    if summary.get("block_by"):
        tested = [
            c
            for c in as_mapping(summary.get("comparisons")).values()
            if as_mapping(c).get("comparison")
        ]
        out.append(
            Paragraph(
                f"{measured} The arms are blocked by `{summary['block_by']}`: each arm is compared "
                "only with the baseline of its own block (Welch's t-test), never with an arm of "
                f"another block; the Holm adjustment runs over all {len(tested)} comparisons "
                "made, every block together.",
                "muted",
            )
        )
        for block, baseline, members in study_blocks(summary):
            out.append(Heading(3, f"Block `{block}`: baseline `{baseline}`"))
            out.append(_arms_table(summary, members, f"arms-table-{block}"))
    else:
        out.append(
            Paragraph(
                f"{measured} Each arm is compared with the baseline `{summary.get('baseline')}` "
                "(Welch's t-test; Holm-adjusted across the arms).",
                "muted",
            )
        )
        out.append(_arms_table(summary, arms, "arms-table"))
    notes = _arms_notes(summary, arms)
    if notes:
        out.append(Bullets(tuple(notes), "notes"))
    return out


def _solves_symbol(summary: Mapping[str, Any]) -> str:
    return "≤" if summary.get("higher_is_better") is False else "≥"


def _solved_header(summary: Mapping[str, Any]) -> tuple[str, ...]:
    """The arms table's "Solved" column, for a study that declares SOLVED_AT; () otherwise."""
    solved_at = as_float(summary.get("solved_at"))
    if not math.isfinite(solved_at):
        return ()
    return (f"Solved ({_solves_symbol(summary)} {solved_at:g}), exact CI",)


# The generation suite's decoding time, the arms table's cost column beside checkpoint bytes.
DECODE_HEADLINE = "generation/seconds_per_token"


def _cost_headers(summary: Mapping[str, Any]) -> tuple[str, ...]:
    """The arms table's cost columns, each only when some arm has its number: the newest
    checkpoint's bytes, and the decoding time per token (the generation suite's)."""
    arms = [arm_entry(summary, a) for a in arm_order(summary)]
    headers = []
    if any(math.isfinite(as_float(a.get("checkpoint_bytes"))) for a in arms):
        headers.append("Checkpoint bytes")
    if any(_decode_seconds(a) for a in arms):
        headers.append("Decode ms/token (mean ± CI)")
    return tuple(headers)


def _decode_seconds(arm: Mapping[str, Any]) -> Mapping[str, Any]:
    headline = as_mapping(as_mapping(arm.get("evaluation")).get("headline"))
    return as_mapping(as_mapping(headline.get(DECODE_HEADLINE)).get("final"))


def _cost_cells(summary: Mapping[str, Any], arm: Mapping[str, Any]) -> tuple[str, ...]:
    cells = []
    for header in _cost_headers(summary):
        if header == "Checkpoint bytes":
            cells.append(fmt_large(arm.get("checkpoint_bytes")))
        else:
            seconds = _decode_seconds(arm)
            lo, hi = as_pair(seconds.get("t_ci"))
            in_ms = {"mean": 1e3 * as_float(seconds.get("mean")), "t_ci": [1e3 * lo, 1e3 * hi]}
            cells.append(mean_pm({**seconds, **in_ms}))
    return tuple(cells)


def _arms_table(summary: Mapping[str, Any], arms: Sequence[str], anchor: str) -> Table:
    solved = _solved_header(summary)
    cost = _cost_headers(summary)
    headers = (
        "Arm",
        "Seeds",
        "Final (mean ± CI)",
        f"{confidence_label(summary)} t-CI",
        "Final per seed",
        *solved,
        "Best (mean)",
        *cost,
        "Δ vs baseline",
        "Relative Δ",
        "Welch p",
        "Holm p",
        "Mann-Whitney p",
        "Cohen's d",
        "Resolution",
    )
    numeric = (False, *(True for _ in headers[1:-1]), False)
    marked = tuple(is_baseline(summary, arm) for arm in arms)
    rows = tuple(_arm_row(summary, arm, m) for arm, m in zip(arms, marked, strict=True))
    return Table(headers, rows, numeric, marked, anchor)


def _arm_row(summary: Mapping[str, Any], name: str, baseline: bool) -> tuple[str, ...]:
    arm = arm_entry(summary, name)
    stats = metric_stats(arm, summary.get("metric") or "")
    final, best = as_mapping(stats.get("final")), as_mapping(stats.get("best"))
    seeds = f"{_count(arm.get('seeds_completed'))}/{_count(arm.get('seeds_planned'))}"
    row = (
        arm_label(summary, name),
        seeds,
        mean_pm(final),
        ci_bounds(final),
        fmt_seed_values(stats.get("final_values")),
        *(fraction_ci(as_mapping(stats.get("solved"))) for _ in _solved_header(summary)),
        _mean_or_dash(best),
        *_cost_cells(summary, arm),
    )
    if not final:
        return (*row, *[DASH] * 6, "no completed seeds")
    if baseline:
        return (*row, *[""] * 6, "baseline")
    entry = as_mapping(as_mapping(summary.get("comparisons")).get(name))
    comparison = as_mapping(entry.get("comparison"))
    if not comparison:
        # The aggregator's reason can be a sentence: it goes under the table.
        return (*row, *[DASH] * 6, "not compared")
    return (
        *row,
        fmt_signed(comparison.get("difference")),
        fmt_percent(comparison.get("relative_change")),
        fmt_p(comparison.get("welch_p")),
        fmt_p(entry.get("holm_p")),
        fmt_p(comparison.get("mann_whitney_p")),
        fmt_number(comparison.get("cohens_d"), 3),
        resolution_note(comparison),
    )


def _count(value: Any) -> str:
    x = as_float(value)
    return str(int(x)) if math.isfinite(x) else "?"


def _mean_or_dash(stat: Mapping[str, Any]) -> str:
    return fmt_number(stat.get("mean")) if stat else DASH


def resolution_note(comparison: Mapping[str, Any]) -> str:
    """A short note on whether these seeds could resolve the difference seen."""
    if as_float(comparison.get("pooled_sd")) == 0:
        return "no spread across seeds"
    if comparison.get("resolvable") is not False:
        return "resolvable"
    if as_float(comparison.get("difference")) == 0:
        return "means equal"
    needed = as_float(comparison.get("seeds_per_arm_needed"))
    if math.isfinite(needed):
        return f"seeds too few: needs {int(needed)} per arm"
    return "seeds too few: no feasible seed count resolves it"


def _arms_notes(summary: Mapping[str, Any], arms: Sequence[str]) -> list[str]:
    """What the table's short cells stand for: why an arm has no interval or no comparison,
    the full resolution sentence where the seeds were too few, and the Mann-Whitney floor."""
    alpha = as_float(summary.get("alpha"))
    alpha = alpha if math.isfinite(alpha) else 0.05
    metric = summary.get("metric") or ""
    notes = []
    floors: set[str] = set()
    for arm in arms:
        final = as_mapping(metric_stats(arm_entry(summary, arm), metric).get("final"))
        if final.get("ci_note"):
            notes.append(f"`{arm}`: {final['ci_note']}.")
        entry = as_mapping(as_mapping(summary.get("comparisons")).get(arm))
        comparison = as_mapping(entry.get("comparison"))
        if not comparison:
            if entry.get("note") and not is_baseline(summary, arm):
                notes.append(f"`{arm}`: {entry['note']}.")
            continue
        if comparison.get("resolvable") is False and comparison.get("resolution"):
            notes.append(f"`{arm}`: {comparison['resolution']}.")
        min_p = as_float(comparison.get("mann_whitney_min_p"))
        if min_p >= alpha:
            n_b, n_c = _count(comparison.get("n_baseline")), _count(comparison.get("n_candidate"))
            floors.add(f"{n_b} vs {n_c} seeds (smallest possible p {fmt_p(min_p)})")
    for floor in sorted(floors):
        notes.append(
            f"At {floor} the Mann-Whitney test cannot reach alpha {alpha:g}: "
            "read it as a cross-check of direction, not of significance."
        )
    return notes


def _other_metrics_section(summary: Mapping[str, Any]) -> list[Block]:
    primary = summary.get("metric")
    arms = arm_order(summary)
    metrics = sorted(
        {m for a in arms for m in as_mapping(arm_entry(summary, a).get("metrics")) if m != primary}
    )
    blocks: list[Block] = [Heading(2, "Other metrics", "other-metrics")]
    if not metrics:
        blocks.append(Paragraph("No other metric was recorded."))
        return blocks
    conf = confidence_label(summary)
    blocks.append(
        Paragraph(f"Final value over seeds: mean ± half-width of the {conf} t-interval.", "muted")
    )
    rows = tuple(
        (arm_label(summary, a), *(_final_pm(arm_entry(summary, a), m) for m in metrics))
        for a in arms
    )
    numeric = (False, *(True for _ in metrics))
    marked = tuple(is_baseline(summary, a) for a in arms)
    blocks.append(Table(("Arm", *metrics), rows, numeric, marked, "metrics-table"))
    return blocks


def _evaluation_section(summary: Mapping[str, Any]) -> list[Block]:
    """The evaluation suites' headline numbers: a row per number, a column per arm."""
    arms = arm_order(summary)
    evaluations = {a: as_mapping(arm_entry(summary, a).get("evaluation")) for a in arms}
    names = sorted({n for e in evaluations.values() for n in as_mapping(e.get("headline"))})
    blocks: list[Block] = [Heading(2, "Evaluation suites", "evaluation")]
    if not names:
        blocks.append(Paragraph("No run was evaluated (see `eval.suites`, `launch.evaluate`)."))
        return blocks
    conf = confidence_label(summary)
    blocks.append(
        Paragraph(
            f"Headline numbers of each run's `eval/` (calibration on the held-out half of the "
            f"evaluation split, robustness curves, worst slices, group gaps, and with the "
            f"generation suite what decoding costs: state bytes per sequence, seconds per "
            f"token): mean ± half-width of the {conf} t-interval over seeds. Each run's own "
            "numbers, plots, hardest examples and generations are in its `eval/` and "
            "`model_card.md`.",
            "muted",
        )
    )

    def cell(arm: str, name: str) -> str:
        entry = as_mapping(as_mapping(evaluations[arm].get("headline")).get(name))
        return mean_pm(as_mapping(entry.get("final")))

    rows = tuple((name, *(cell(a, name) for a in arms)) for name in names)
    headers = ("Number", *(arm_label(summary, a) for a in arms))
    numeric = (False, *(True for _ in arms))
    blocks.append(Table(headers, rows, numeric, tuple(False for _ in names), "evaluation-table"))
    reasons = {}
    for arm, evaluation in evaluations.items():
        for suite, reason in as_mapping(evaluation.get("not_applicable")).items():
            reasons.setdefault(f"{suite}: {reason}", []).append(arm)
    notes = [f"Not applicable ({', '.join(a)}): {text}." for text, a in reasons.items()]
    for arm, evaluation in evaluations.items():
        runs, of_runs = evaluation.get("runs"), evaluation.get("of_runs")
        if isinstance(runs, int) and isinstance(of_runs, int) and runs < of_runs:
            notes.append(
                f"`{arm}`: these numbers cover {runs} of its {of_runs} completed runs; the "
                "others have no `eval/summary.json` (rerun the study, or `launch.evaluate` them)."
            )
    if notes:
        blocks.append(Bullets(tuple(notes), "notes"))
    return blocks


def _final_pm(arm: Mapping[str, Any], metric: str) -> str:
    return mean_pm(as_mapping(metric_stats(arm, metric).get("final")))


def _band(summary: Mapping[str, Any]) -> str:
    """What the curves' shaded band is, as the aggregator says (it computes lo and hi)."""
    for arm in arm_order(summary):
        curve = as_mapping(
            as_mapping(arm_entry(summary, arm).get("curves")).get(summary.get("metric"))
        )
        if curve.get("band"):
            return str(curve["band"])
    return "the spread across seeds (lo to hi)"


def _plots_section(summary: Mapping[str, Any]) -> list[Block]:
    metric = summary.get("metric") or "primary metric"
    conf = confidence_label(summary)
    dashed = (
        "each dashed line is a block's baseline mean, across that block's bars"
        if summary.get("block_by")
        else "the dashed line is the baseline's mean"
    )
    return [
        Heading(2, "Plots", "plots"),
        Image(
            CURVES_PNG,
            f"Learning curves of {metric}",
            f"{metric} against training step: the line is the mean over seeds, the shaded "
            f"band {_band(summary)}.",
        ),
        Image(
            PRIMARY_PNG,
            f"Final {metric} per arm",
            f"Final {metric} per arm: bars are the mean over seeds, whiskers the {conf} "
            f"t-interval, dots the individual seeds; {dashed}.",
        ),
    ]


def _compute_section(summary: Mapping[str, Any]) -> list[Block]:
    arms = arm_order(summary)
    rows = [
        (arm_label(summary, a), *_compute_cells(as_mapping(arm_entry(summary, a).get("compute"))))
        for a in arms
    ]
    rows.append(("Total", *_compute_cells(as_mapping(summary.get("compute")))))
    marked = tuple([False] * len(arms) + [True])
    return [
        Heading(2, "Compute spent", "compute"),
        Table(
            ("Arm", "Steps", "Tokens", "Wall time", "FLOPs"),
            tuple(rows),
            (False, True, True, True, True),
            marked,
            "compute-table",
        ),
    ]


def _compute_cells(compute: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (
        fmt_large(compute.get("steps")),
        fmt_large(compute.get("tokens")),
        fmt_duration(compute.get("wall_seconds")),
        fmt_large(compute.get("flops")),
    )


def _provenance_section(summary: Mapping[str, Any]) -> list[Block]:
    provenance = as_mapping(summary.get("provenance"))
    blocks: list[Block] = [Heading(2, "Provenance", "provenance")]
    blocks.extend(Alert(text) for text in _provenance_warnings(summary))
    commits = as_list(provenance.get("commits"))
    overrides = as_list(summary.get("overrides"))
    datasets = as_mapping(provenance.get("datasets"))
    versions = as_mapping(provenance.get("versions"))
    items = [
        "Code commits: " + (", ".join(f"`{c}`" for c in commits) if commits else "unknown"),
        "Uncommitted changes: " + ("yes" if provenance.get("dirty") else "no"),
        "Study file: " + (f"`{summary['study_file']}`" if summary.get("study_file") else DASH),
        "Setting: " + (f"`{summary['setting']}`" if summary.get("setting") else "default"),
        "Seeds: " + (", ".join(str(s) for s in as_list(summary.get("seeds"))) or DASH),
        "Command-line overrides: "
        + (" ".join(f"`{o}`" for o in overrides) if overrides else "none"),
        "Datasets: "
        + ("; ".join(f"{k} `{v}`" for k, v in datasets.items()) if datasets else "unknown"),
        "Versions: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown"),
    ]
    blocks.append(Bullets(tuple(items)))
    blocks.append(_config_table(summary))
    return blocks


def _config_table(summary: Mapping[str, Any]) -> Table:
    hashes = as_mapping(as_mapping(summary.get("provenance")).get("config_hashes"))
    rows = []
    for a in arm_order(summary):
        arm = arm_entry(summary, a)
        # An arm whose runs resolved to different configs has no single hash, but a list.
        arm_hashes = as_list(arm.get("config_hashes")) or [arm.get("config_hash") or hashes.get(a)]
        shown = ", ".join(f"`{str(h)[:HASH_CHARS]}`" for h in arm_hashes if h)
        overrides = as_mapping(arm.get("overrides"))
        rows.append(
            (
                arm_label(summary, a),
                shown or DASH,
                ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none",
            )
        )
    marked = tuple(is_baseline(summary, a) for a in arm_order(summary))
    headers = ("Arm", "Config hash", "Arm overrides")
    return Table(headers, tuple(rows), (False, False, False), marked, "config-table")


def _failed_section(summary: Mapping[str, Any]) -> list[Block]:
    failed = [as_mapping(r) for r in as_list(summary.get("failed_runs"))]
    blocks: list[Block] = [Heading(2, "Failed runs", "failed")]
    if not failed:
        blocks.append(Paragraph("none"))
        return blocks
    rows = tuple(
        (str(r.get("arm", "?")), str(r.get("seed", "?")), str(r.get("status", "?")), _workdir(r))
        for r in failed
    )
    blocks.append(Table(("Arm", "Seed", "Status", "Workdir"), rows, (False, True, False, False)))
    for r in failed:
        label = f"{r.get('arm', '?')}, seed {r.get('seed', '?')}: end of the log"
        blocks.append(Preformatted(label, str(r.get("log_tail") or "(no log)")))
    return blocks


def _workdir(run: Mapping[str, Any]) -> str:
    return str(run.get("workdir") or DASH)
