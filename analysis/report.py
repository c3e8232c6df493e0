"""A study's report: its summary as Markdown and as one self-contained HTML page, with plots.

`write_reports(study_dir, summary)` renders the dict the study aggregator writes to
`<study_dir>/summary.json`, as loaded from that file. It writes

    report.md      the same facts as plain text, for a terminal or a pull request
    report.html    the page a person opens: the verdicts first, plots embedded as data URIs,
                   inline CSS, no scripts and nothing fetched from elsewhere
    plots/learning_curves.png, plots/primary_metric.png

Both files are rendered from one list of blocks (headings, tables, verdict cards, ...), so they
cannot drift apart in what they say. Rendering is defensive: an optional key may be missing, a
number may be NaN or None (JSON null), an arm may have no completed seed; the report still
comes out and shows "—" for what is not known. Everything that came from the summary is
HTML-escaped in the page: log tails and config values are arbitrary text.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from analysis import figures

DASH = "—"  # what an unknown number (NaN, None, missing) shows as
PLOTS_DIR = "plots"
CURVES_PNG = "learning_curves.png"
PRIMARY_PNG = "primary_metric.png"
HASH_CHARS = 12  # a config hash or commit is shown this long; the full one is in summary.json

# Verdict colours (text, background): restrained, and distinguishable by their words too.
OUTCOME_COLORS = {
    "supported": ("#1a7f37", "#dafbe1"),
    "refuted": ("#cf222e", "#ffebe9"),
    "inconclusive": ("#9a6700", "#fff8c5"),
}
UNKNOWN_OUTCOME_COLORS = ("#57606a", "#eaeef2")
BASELINE_COLOR = "#444c56"
# Colours for the other arms, the same in both plots (tab10 without its grey).
ARM_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


def write_reports(study_dir: str, summary: Mapping[str, Any]) -> dict[str, str]:
    """Writes report.md, report.html and plots/*.png under `study_dir`; returns their paths.

    The keys of the result are "md", "html", "learning_curves" and "primary_metric".
    """
    plots_dir = os.path.join(study_dir, PLOTS_DIR)
    os.makedirs(plots_dir, exist_ok=True)
    images = {
        CURVES_PNG: learning_curves_png(summary),
        PRIMARY_PNG: primary_metric_png(summary),
    }
    paths = {
        "learning_curves": os.path.join(plots_dir, CURVES_PNG),
        "primary_metric": os.path.join(plots_dir, PRIMARY_PNG),
        "md": os.path.join(study_dir, "report.md"),
        "html": os.path.join(study_dir, "report.html"),
    }
    _write_bytes(paths["learning_curves"], images[CURVES_PNG])
    _write_bytes(paths["primary_metric"], images[PRIMARY_PNG])
    blocks = report_blocks(summary)
    title = f"Study report: {summary.get('study') or 'unnamed study'}"
    _write_bytes(paths["md"], render_markdown(blocks).encode())
    _write_bytes(paths["html"], render_html(blocks, title, images).encode())
    return paths


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


# --- formatting numbers ---------------------------------------------------------------------


def as_float(value: Any) -> float:
    """A number as a float; NaN for None, missing or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def fmt_number(value: Any, digits: int = 4) -> str:
    """`digits` significant digits; "—" for NaN or None."""
    x = as_float(value)
    if math.isnan(x):
        return DASH
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits}g}"


def fmt_signed(value: Any, digits: int = 4) -> str:
    x = as_float(value)
    return fmt_number(x, digits) if not math.isfinite(x) else f"{x:+.{digits}g}"


def fmt_percent(value: Any) -> str:
    x = as_float(value)
    return fmt_number(x) if not math.isfinite(x) else f"{x:+.1%}"


def fmt_p(value: Any) -> str:
    """A p-value: 0.012, or 3.1e-05 below 0.001."""
    p = as_float(value)
    if math.isnan(p):
        return DASH
    if p == 0:
        return "0"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.2g}"


def fmt_large(value: Any) -> str:
    """Counts: 1,800 below 100,000, then 7.37e6 and 1.2e12."""
    x = as_float(value)
    if not math.isfinite(x):
        return fmt_number(x)
    if abs(x) < 1e5:
        return f"{x:,.0f}" if x == int(x) else f"{x:,.4g}"
    mantissa, exponent = f"{x:.3g}".split("e")
    return f"{mantissa}e{int(exponent)}"


def fmt_duration(value: Any) -> str:
    """Seconds as 45.2s, 3m 20s, 2h 05m or 3d 4h."""
    s = as_float(value)
    if not math.isfinite(s):
        return fmt_number(s)
    if s < 60:
        return f"{s:.1f}s"
    whole = round(s)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


def fmt_time(value: Any) -> str:
    """An ISO timestamp as 2026-11-28 22:50 UTC; anything else as given."""
    if not isinstance(value, str) or not value:
        return DASH
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


# --- reading the summary defensively --------------------------------------------------------


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _pair(value: Any) -> tuple[float, float]:
    items = _list(value)
    return (as_float(items[0]), as_float(items[1])) if len(items) == 2 else (math.nan, math.nan)


def arm_order(summary: Mapping[str, Any]) -> list[str]:
    """The arms, baseline first, then in the summary's order."""
    arms = list(_dict(summary.get("arms")))
    baseline = summary.get("baseline")
    return ([baseline] if baseline in arms else []) + [a for a in arms if a != baseline]


def _arm(summary: Mapping[str, Any], arm: str) -> Mapping[str, Any]:
    return _dict(_dict(summary.get("arms")).get(arm))


def arm_label(summary: Mapping[str, Any], arm: str) -> str:
    """The arm's name, marked when it is the baseline (in every table, not only by colour)."""
    return f"{arm} (baseline)" if arm == summary.get("baseline") else arm


def _metric_stats(arm: Mapping[str, Any], metric: str) -> Mapping[str, Any]:
    return _dict(_dict(arm.get("metrics")).get(metric))


def _direction(summary: Mapping[str, Any]) -> str:
    higher = summary.get("higher_is_better")
    if higher is None:
        return "direction not stated"
    return "higher is better" if higher else "lower is better"


def _confidence_label(summary: Mapping[str, Any]) -> str:
    c = as_float(summary.get("confidence"))
    return f"{c:.0%}" if math.isfinite(c) else "95%"


def mean_pm(stat: Mapping[str, Any]) -> str:
    """A Summary dict as "mean ± half-width of its t-interval"."""
    if not stat or not as_float(stat.get("n")) > 0:
        return DASH
    lo, hi = _pair(stat.get("t_ci"))
    return f"{fmt_number(stat.get('mean'))} ± {fmt_number((hi - lo) / 2)}"


def ci_bounds(stat: Mapping[str, Any]) -> str:
    if not stat or not as_float(stat.get("n")) > 0:
        return DASH
    lo, hi = _pair(stat.get("t_ci"))
    return f"[{fmt_number(lo)}, {fmt_number(hi)}]"


# --- the document: blocks both renderers understand -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str  # `backticks` mark code, as in Markdown
    style: str = ""  # "meta", "muted" or "lead": how the page shows it


@dataclasses.dataclass(frozen=True)
class Alert:
    text: str  # something that undermines the numbers: a failed run, mixed or dirty code


@dataclasses.dataclass(frozen=True)
class Claim:
    outcome: str
    text: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Headline:
    """The study's overall verdict on its hypothesis: the largest thing on the page."""

    outcome: str
    text: str
    detail: str


@dataclasses.dataclass(frozen=True)
class Claims:
    claims: tuple[Claim, ...]


@dataclasses.dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]  # per column: right-aligned, tabular figures
    marked: tuple[bool, ...] = ()  # per row: the baseline, or a total
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    style: str = ""  # "notes" for footnotes under a table


@dataclasses.dataclass(frozen=True)
class Image:
    file: str  # name under plots/
    alt: str
    caption: str


@dataclasses.dataclass(frozen=True)
class Preformatted:
    label: str
    text: str


Block = Heading | Paragraph | Alert | Headline | Claims | Table | Bullets | Image | Preformatted


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


# --- sections -------------------------------------------------------------------------------


def _header(summary: Mapping[str, Any]) -> list[Block]:
    """Title, what was run, then the verdicts: what a person must see in the first second."""
    arms = arm_order(summary)
    seeds = _list(summary.get("seeds"))
    facts = [f"created {fmt_time(summary.get('created'))}"]
    if summary.get("study_file"):
        facts.append(f"`{summary['study_file']}`")
    if summary.get("setting"):
        facts.append(f"setting `{summary['setting']}`")
    facts.append(f"{len(arms)} arms × {len(seeds)} seeds")
    facts.append(f"primary metric `{summary.get('metric') or DASH}` ({_direction(summary)})")
    if summary.get("baseline"):
        facts.append(f"baseline `{summary['baseline']}`")
    blocks: list[Block] = [
        Heading(1, f"Study report: {summary.get('study') or 'unnamed study'}"),
        Paragraph(" · ".join(facts), "meta"),
    ]
    claims = [_claim(c) for c in _list(summary.get("claims"))]
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
        blocks.append(Paragraph("p-values Holm-adjusted across the study's claims.", "muted"))
    else:
        blocks.append(Paragraph("No claims were declared: this study only describes its arms."))
    blocks.extend(Alert(text) for text in _alerts(summary))
    return blocks


def _claim(claim: Any) -> Claim:
    claim = _dict(claim)
    verdict = _dict(claim.get("verdict"))
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
    failed = _list(summary.get("failed_runs"))
    if failed:
        noun = "run" if len(failed) == 1 else "runs"
        alerts.append(f"{len(failed)} {noun} did not complete: see Failed runs.")
    return alerts + _provenance_warnings(summary)


def _provenance_warnings(summary: Mapping[str, Any]) -> list[str]:
    provenance = _dict(summary.get("provenance"))
    commits = _list(provenance.get("commits"))
    warnings = []
    if len(commits) > 1:
        warnings.append(
            f"The runs come from {len(commits)} different code commits: "
            "the arms may not have run the same code."
        )
    for arm in arm_order(summary):
        n = len(_list(_arm(summary, arm).get("config_hashes")))
        if n > 1:
            warnings.append(f"Arm `{arm}` ran with {n} different configs: its seeds differ.")
    if provenance.get("dirty"):
        warnings.append(
            "At least one run had uncommitted changes: its code is not recorded in any commit."
        )
    warnings.extend(_leak_warning(leak) for leak in _list(provenance.get("dataset_leaks")))
    return warnings


def _leak_warning(leak: Any) -> str:
    """A dataset whose evaluation examples also occur in its train split (`dataset_leaks`)."""
    leak = _dict(leak)
    parts = []
    for split, counts in _dict(leak.get("eval")).items():
        counts = _dict(counts)
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
    conf = _confidence_label(summary)
    headers = (
        "Arm",
        "Seeds",
        "Final (mean ± CI)",
        f"{conf} t-CI",
        "Best (mean)",
        "Δ vs baseline",
        "Relative Δ",
        "Welch p",
        "Holm p",
        "Mann-Whitney p",
        "Cohen's d",
        "Resolution",
    )
    numeric = (False, True, True, True, True, True, True, True, True, True, True, False)
    baseline = summary.get("baseline")
    arms = arm_order(summary)
    rows = tuple(_arm_row(summary, arm, arm == baseline) for arm in arms)
    blocks: list[Block] = [
        Heading(2, "Arms", "arms"),
        Paragraph(
            f"Final `{metric}` ({_direction(summary)}) over seeds: mean ± half-width of the "
            f"{conf} t-interval. Each arm is compared with the baseline `{baseline}` "
            "(Welch's t-test; Holm-adjusted across the arms).",
            "muted",
        ),
        Table(headers, rows, numeric, tuple(arm == baseline for arm in arms), "arms-table"),
    ]
    notes = _arms_notes(summary, arms)
    if notes:
        blocks.append(Bullets(tuple(notes), "notes"))
    return blocks


def _arm_row(summary: Mapping[str, Any], name: str, is_baseline: bool) -> tuple[str, ...]:
    arm = _arm(summary, name)
    stats = _metric_stats(arm, summary.get("metric") or "")
    final, best = _dict(stats.get("final")), _dict(stats.get("best"))
    seeds = f"{_count(arm.get('seeds_completed'))}/{_count(arm.get('seeds_planned'))}"
    row = (arm_label(summary, name), seeds, mean_pm(final), ci_bounds(final), _mean_or_dash(best))
    if not final:
        return (*row, *[DASH] * 6, "no completed seeds")
    if is_baseline:
        return (*row, *[""] * 6, "baseline")
    entry = _dict(_dict(summary.get("comparisons")).get(name))
    comparison = _dict(entry.get("comparison"))
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
        final = _dict(_metric_stats(_arm(summary, arm), metric).get("final"))
        if final.get("ci_note"):
            notes.append(f"`{arm}`: {final['ci_note']}.")
        entry = _dict(_dict(summary.get("comparisons")).get(arm))
        comparison = _dict(entry.get("comparison"))
        if not comparison:
            if entry.get("note") and arm != summary.get("baseline"):
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
        {m for a in arms for m in _dict(_arm(summary, a).get("metrics")) if m != primary}
    )
    blocks: list[Block] = [Heading(2, "Other metrics", "other-metrics")]
    if not metrics:
        blocks.append(Paragraph("No other metric was recorded."))
        return blocks
    conf = _confidence_label(summary)
    blocks.append(
        Paragraph(f"Final value over seeds: mean ± half-width of the {conf} t-interval.", "muted")
    )
    rows = tuple(
        (arm_label(summary, a), *(_final_pm(_arm(summary, a), m) for m in metrics)) for a in arms
    )
    numeric = (False, *(True for _ in metrics))
    marked = tuple(a == summary.get("baseline") for a in arms)
    blocks.append(Table(("Arm", *metrics), rows, numeric, marked, "metrics-table"))
    return blocks


def _evaluation_section(summary: Mapping[str, Any]) -> list[Block]:
    """The evaluation suites' headline numbers: a row per number, a column per arm."""
    arms = arm_order(summary)
    evaluations = {a: _dict(_arm(summary, a).get("evaluation")) for a in arms}
    names = sorted({n for e in evaluations.values() for n in _dict(e.get("headline"))})
    blocks: list[Block] = [Heading(2, "Evaluation suites", "evaluation")]
    if not names:
        blocks.append(Paragraph("No run was evaluated (see `eval.suites`, `launch.evaluate`)."))
        return blocks
    conf = _confidence_label(summary)
    blocks.append(
        Paragraph(
            f"Headline numbers of each run's `eval/` (calibration on the held-out half of the "
            f"evaluation split, robustness curves, worst slices, group gaps): mean ± half-width "
            f"of the {conf} t-interval over seeds. Each run's own numbers, plots and hardest "
            "examples are in its `eval/` and `model_card.md`.",
            "muted",
        )
    )

    def cell(arm: str, name: str) -> str:
        entry = _dict(_dict(evaluations[arm].get("headline")).get(name))
        return mean_pm(_dict(entry.get("final")))

    rows = tuple((name, *(cell(a, name) for a in arms)) for name in names)
    headers = ("Number", *(arm_label(summary, a) for a in arms))
    numeric = (False, *(True for _ in arms))
    blocks.append(Table(headers, rows, numeric, tuple(False for _ in names), "evaluation-table"))
    reasons = {}
    for arm, evaluation in evaluations.items():
        for suite, reason in _dict(evaluation.get("not_applicable")).items():
            reasons.setdefault(f"{suite}: {reason}", []).append(arm)
    if reasons:
        notes = [f"Not applicable ({', '.join(a)}): {text}." for text, a in reasons.items()]
        blocks.append(Bullets(tuple(notes), "notes"))
    return blocks


def _final_pm(arm: Mapping[str, Any], metric: str) -> str:
    return mean_pm(_dict(_metric_stats(arm, metric).get("final")))


def _band(summary: Mapping[str, Any]) -> str:
    """What the curves' shaded band is, as the aggregator says (it computes lo and hi)."""
    for arm in arm_order(summary):
        curve = _dict(_dict(_arm(summary, arm).get("curves")).get(summary.get("metric")))
        if curve.get("band"):
            return str(curve["band"])
    return "the spread across seeds (lo to hi)"


def _plots_section(summary: Mapping[str, Any]) -> list[Block]:
    metric = summary.get("metric") or "primary metric"
    conf = _confidence_label(summary)
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
            "t-interval, dots the individual seeds; the dashed line is the baseline's mean.",
        ),
    ]


def _compute_section(summary: Mapping[str, Any]) -> list[Block]:
    arms = arm_order(summary)
    rows = [
        (arm_label(summary, a), *_compute_cells(_dict(_arm(summary, a).get("compute"))))
        for a in arms
    ]
    rows.append(("Total", *_compute_cells(_dict(summary.get("compute")))))
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
    provenance = _dict(summary.get("provenance"))
    blocks: list[Block] = [Heading(2, "Provenance", "provenance")]
    blocks.extend(Alert(text) for text in _provenance_warnings(summary))
    commits = _list(provenance.get("commits"))
    overrides = _list(summary.get("overrides"))
    datasets = _dict(provenance.get("datasets"))
    versions = _dict(provenance.get("versions"))
    items = [
        "Code commits: " + (", ".join(f"`{c}`" for c in commits) if commits else "unknown"),
        "Uncommitted changes: " + ("yes" if provenance.get("dirty") else "no"),
        "Study file: " + (f"`{summary['study_file']}`" if summary.get("study_file") else DASH),
        "Setting: " + (f"`{summary['setting']}`" if summary.get("setting") else "default"),
        "Seeds: " + (", ".join(str(s) for s in _list(summary.get("seeds"))) or DASH),
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
    hashes = _dict(_dict(summary.get("provenance")).get("config_hashes"))
    rows = []
    for a in arm_order(summary):
        arm = _arm(summary, a)
        # An arm whose runs resolved to different configs has no single hash, but a list.
        arm_hashes = _list(arm.get("config_hashes")) or [arm.get("config_hash") or hashes.get(a)]
        shown = ", ".join(f"`{str(h)[:HASH_CHARS]}`" for h in arm_hashes if h)
        overrides = _dict(arm.get("overrides"))
        rows.append(
            (
                arm_label(summary, a),
                shown or DASH,
                ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none",
            )
        )
    marked = tuple(a == summary.get("baseline") for a in arm_order(summary))
    headers = ("Arm", "Config hash", "Arm overrides")
    return Table(headers, tuple(rows), (False, False, False), marked, "config-table")


def _failed_section(summary: Mapping[str, Any]) -> list[Block]:
    failed = [_dict(r) for r in _list(summary.get("failed_runs"))]
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


# --- plots ----------------------------------------------------------------------------------


def _arm_colors(summary: Mapping[str, Any]) -> dict[str, str]:
    colors = {}
    others = iter(ARM_COLORS * (1 + len(arm_order(summary)) // len(ARM_COLORS)))
    for arm in arm_order(summary):
        colors[arm] = BASELINE_COLOR if arm == summary.get("baseline") else next(others)
    return colors


def _placeholder(fig: Figure, ax: Any, text: str) -> bytes:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#57606a", transform=ax.transAxes)
    return figures.png(fig)


def _floats(values: Any) -> list[float]:
    return [as_float(v) for v in _list(values)]


def learning_curves_png(summary: Mapping[str, Any]) -> bytes:
    """The primary metric against step, one line per arm (mean over seeds) with its band."""
    metric = summary.get("metric") or ""
    fig, ax = figures.new_axes(9, 4.2)
    colors = _arm_colors(summary)
    drawn = 0
    for arm in arm_order(summary):
        curve = _dict(_dict(_arm(summary, arm).get("curves")).get(metric))
        steps, mean = _floats(curve.get("steps")), _floats(curve.get("mean"))
        if not steps or len(mean) != len(steps):
            continue
        is_baseline = arm == summary.get("baseline")
        label = arm_label(summary, arm)
        ax.plot(steps, mean, color=colors[arm], linewidth=2.2 if is_baseline else 1.6, label=label)
        lo, hi = _floats(curve.get("lo")), _floats(curve.get("hi"))
        if len(lo) == len(steps) == len(hi):
            ax.fill_between(steps, lo, hi, color=colors[arm], alpha=0.15, linewidth=0)
        drawn += 1
    if not drawn:
        return _placeholder(fig, ax, f"no {metric or 'metric'} curves were logged")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} during training ({_direction(summary)})", loc="left")
    ax.legend(frameon=False, loc="best", fontsize="small")
    return figures.png(fig)


def primary_metric_png(summary: Mapping[str, Any]) -> bytes:
    """Final primary metric per arm: mean bars, t-interval whiskers, seeds as dots."""
    metric = summary.get("metric") or ""
    arms = arm_order(summary)
    fig, ax = figures.new_axes(max(5.5, 1.3 * len(arms) + 2.5), 4.2)
    if not arms:
        return _placeholder(fig, ax, "no arms")
    colors = _arm_colors(summary)
    baseline = summary.get("baseline")
    for x, arm in enumerate(arms):
        stats = _metric_stats(_arm(summary, arm), metric)
        final, values = _dict(stats.get("final")), _floats(stats.get("final_values"))
        _draw_arm_bar(ax, x, final, values, colors[arm])
        if arm == baseline:
            mean = as_float(_dict(stats.get("final")).get("mean"))
            if math.isfinite(mean):
                ax.axhline(mean, color=BASELINE_COLOR, linestyle="--", linewidth=1, zorder=1)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_xticks(range(len(arms)), [f"{a}\n(baseline)" if a == baseline else a for a in arms])
    for tick, arm in zip(ax.get_xticklabels(), arms, strict=True):
        tick.set_fontweight("bold" if arm == baseline else "normal")
    ax.set_ylabel(f"final {metric}")
    conf = _confidence_label(summary)
    ax.set_title(f"Final {metric} ({_direction(summary)}); whiskers: {conf} t-CI", loc="left")
    ax.grid(False, axis="x")
    return figures.png(fig)


def _draw_arm_bar(
    ax: Any, x: int, final: Mapping[str, Any], values: list[float], arm_color: str
) -> None:
    mean = as_float(final.get("mean"))
    if not math.isfinite(mean):
        ax.text(x, 0, "no seeds", ha="center", va="bottom", color="#57606a", fontsize="small")
        return
    lo, hi = _pair(final.get("t_ci"))
    ax.bar(x, mean, width=0.6, color=arm_color, alpha=0.35, edgecolor=arm_color, zorder=2)
    if math.isfinite(lo) and math.isfinite(hi):
        yerr = [[mean - lo], [hi - mean]]
        ax.errorbar(x, mean, yerr=yerr, color="#24292f", capsize=6, linewidth=1.2, zorder=3)
    finite = [v for v in values if math.isfinite(v)]
    # Seeds sit in a strip right of the whisker (one seed has none), evenly: no random jitter.
    n = len(finite)
    offsets = [0.0] if n == 1 else [0.07 + 0.14 * i / (n - 1) for i in range(n)]
    ax.scatter([x + o for o in offsets], finite, color=arm_color, edgecolor="white", s=36, zorder=4)


# --- Markdown -------------------------------------------------------------------------------


def render_markdown(blocks: Sequence[Block]) -> str:
    parts = [_markdown_block(b) for b in blocks]
    return "\n\n".join(p for p in parts if p) + "\n"


def _markdown_block(block: Block) -> str:
    match block:
        case Heading(level, text):
            return f"{'#' * level} {_md_line(text)}"
        case Paragraph(text, "lead"):
            return f"> {_md_line(text)}"
        case Paragraph(text):
            return _md_line(text)
        case Alert(text):
            return f"**Warning:** {_md_line(text)}"
        case Headline(outcome, text, detail):
            return f"### {outcome.upper()}: {_md_line(text)}\n\n{_md_line(detail)}"
        case Claims(claims):
            return "\n".join(
                f"- **{c.outcome.upper()}** — {_md_line(c.text)}  \n  {_md_line(c.reason)}"
                for c in claims
            )
        case Table():
            return _markdown_table(block)
        case Bullets(items, _):
            return "\n".join(f"- {_md_line(item)}" for item in items)
        case Image(file, alt, caption):
            return f"![{_md_line(alt)}]({PLOTS_DIR}/{file})\n\n*{_md_line(caption)}*"
        case Preformatted(label, text):
            fence = "`" * max(3, _longest_backtick_run(text) + 1)
            return f"{_md_line(label)}:\n\n{fence}\n{text.rstrip()}\n{fence}"
    raise TypeError(f"not a report block: {block!r}")


def _md_line(text: str) -> str:
    return " ".join(str(text).split())


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _markdown_table(table: Table) -> str:
    def cell(text: str) -> str:
        return _md_line(text).replace("|", "\\|")

    marked = table.marked or (False,) * len(table.rows)
    lines = [
        "| " + " | ".join(cell(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in table.numeric) + "|",
    ]
    for row, is_marked in zip(table.rows, marked, strict=True):
        cells = [cell(c) for c in row]
        if is_marked and cells[0]:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 0 1px #d8dee4; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid #d8dee4; }
p { margin: 8px 0; }
code { font: 0.92em ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", monospace;
  background: #eff1f3; padding: 1px 5px; border-radius: 4px; }
.meta { color: #57606a; font-size: 14px; }
.muted { color: #57606a; font-size: 13.5px; }
.lead { font-size: 15px; color: #1f2328; background: #f6f8fa; border-left: 4px solid #afb8c1;
  padding: 10px 14px; margin: 14px 0; }
.card { display: flex; align-items: center; gap: 20px; margin: 12px 0; padding: 14px 20px;
  border-radius: 8px; border: 1px solid; border-left-width: 8px; }
.badge { flex: 0 0 auto; min-width: 170px; text-align: center; color: #fff; font-weight: 700;
  font-size: 18px; letter-spacing: 0.06em; text-transform: uppercase; padding: 8px 14px;
  border-radius: 6px; }
.card-text { font-size: 18px; font-weight: 600; margin: 0 0 4px; }
.card-text code { font-size: 0.9em; background: rgba(255,255,255,0.7); }
.headline { padding: 20px 24px; border-left-width: 12px; }
.headline .badge { font-size: 24px; min-width: 210px; padding: 14px 18px; }
.headline .card-text { font-size: 17px; font-weight: 500; }
.claims { margin-left: 28px; }
.reason { font-size: 13.5px; color: #424a53; margin: 0; }
.alert { padding: 10px 14px; border-radius: 6px; margin: 10px 0; font-size: 14px;
  border: 1px solid #d4a72c; background: #fff8c5; color: #4d2d00; }
.alert strong { margin-right: 6px; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 50%; }
#arms-table { width: 100%; }
th, td { padding: 6px 9px; border-bottom: 1px solid #d8dee4; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; border-top: 1px solid #d8dee4; line-height: 1.3;
  vertical-align: bottom; }

td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tr.marked td { background: #f1f4f8; font-weight: 600; }
tr.marked td:first-child { box-shadow: inset 3px 0 0 #444c56; }
ul { margin: 8px 0; padding-left: 22px; }
li { margin: 3px 0; }
ul.notes { color: #57606a; font-size: 13px; }
figure { margin: 18px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee4;
  border-radius: 6px; }
figcaption { color: #57606a; font-size: 13px; margin-top: 6px; }
.pre-label { font-weight: 600; font-size: 14px; margin: 14px 0 4px; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: 10px 12px;
  font: 12.5px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; overflow-x: auto;
  max-height: 360px; margin: 0 0 10px; white-space: pre; }
"""


def render_html(blocks: Sequence[Block], title: str, images: Mapping[str, bytes]) -> str:
    """One self-contained page: inline CSS, PNGs as data URIs, no scripts, nothing external."""
    body = "\n".join(_html_block(b, images) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def inline_html(text: str) -> str:
    """Escapes text, then shows its `backtick` spans as code (escaping first keeps it safe)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    match block:
        case Heading(level, text, anchor):
            ident = f' id="{html.escape(anchor)}"' if anchor else ""
            return f"<h{level}{ident}>{inline_html(text)}</h{level}>"
        case Paragraph(text, style):
            cls = f' class="{style}"' if style else ""
            return f"<p{cls}>{inline_html(text)}</p>"
        case Alert(text):
            return f'<div class="alert"><strong>Warning:</strong>{inline_html(text)}</div>'
        case Headline(outcome, text, detail):
            return _html_card("headline", outcome, text, detail)
        case Claims(claims):
            cards = "".join(_html_card("claim", c.outcome, c.text, c.reason) for c in claims)
            return f'<section class="claims">{cards}</section>'
        case Table():
            return _html_table(block)
        case Bullets(items, style):
            cls = f' class="{style}"' if style else ""
            return f"<ul{cls}>" + "".join(f"<li>{inline_html(i)}</li>" for i in items) + "</ul>"
        case Image(file, alt, caption):
            data = base64.b64encode(images[file]).decode("ascii")
            return (
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
                f"<figcaption>{inline_html(caption)}</figcaption></figure>"
            )
        case Preformatted(label, text):
            return (
                f'<p class="pre-label">{html.escape(label)}</p>'
                f"<pre>{html.escape(text.rstrip())}</pre>"
            )
    raise TypeError(f"not a report block: {block!r}")


def _html_card(kind: str, outcome: str, text: str, detail: str) -> str:
    """A verdict card: the outcome as a coloured badge, then what was judged and why."""
    color, background = OUTCOME_COLORS.get(outcome, UNKNOWN_OUTCOME_COLORS)
    return (
        f'<div class="card {kind} {html.escape(outcome)}" '
        f'style="border-color: {color}; background: {background};">'
        f'<span class="badge" style="background: {color};">{html.escape(outcome)}</span>'
        f'<div><p class="card-text">{inline_html(text)}</p>'
        f'<p class="reason">{inline_html(detail)}</p></div></div>'
    )


NUMERIC_CLASS = ' class="num"'
MARKED_CLASS = ' class="marked"'


def _html_table(table: Table) -> str:
    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f"<{tag}{NUMERIC_CLASS if num else ''}>{inline_html(v)}</{tag}>"
            for v, num in zip(values, table.numeric, strict=True)
        )

    def header(values: Sequence[str]) -> str:
        # Narrow columns wrap their headers, but never leave a short last word ("p", "d")
        # alone on a line: a non-breaking space holds it to the word before.
        return cells("th", [re.sub(r" (\S{1,2})$", "\u00a0\\1", h) for h in values])

    marked = table.marked or (False,) * len(table.rows)
    rows = "".join(
        f"<tr{MARKED_CLASS if m else ''}>{cells('td', row)}</tr>"
        for row, m in zip(table.rows, marked, strict=True)
    )
    ident = f' id="{html.escape(table.anchor)}"' if table.anchor else ""
    return (
        f'<div class="table-wrap"><table{ident}><thead><tr>{header(table.headers)}</tr>'
        f"</thead><tbody>{rows}</tbody></table></div>"
    )
