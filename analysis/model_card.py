"""A run's model card (`<run>/model_card.md`), written from what the run directory records.

Sections follow Mitchell et al. (2019), "Model Cards for Model Reporting", cut to what a research
run can state truthfully: intended use, architecture, training data (fingerprint, provenance,
leakage check, data sheet), evaluation with intervals, calibration, robustness, slices, group
gaps, privacy, compute, limitations and license. Every number comes from manifest.json,
metrics.jsonl and eval/*.json; what a file does not say is written as not known, never guessed.
A study rewrites the cards of its runs with the arm's across-seed intervals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from analysis.runs import (
    FINISHED,
    MODEL_CARD_FILE,
    QUANTIZATION_FILE,
    SOURCE_EVAL_DIR,
    eval_file,
    load_run,
    read_json,
)
from atomic_write import write_atomically

CARD_FILE = MODEL_CARD_FILE
UNKNOWN = "not recorded"


def write(workdir: str, arm: Mapping[str, Any] | None = None) -> str:
    """Renders and writes <workdir>/model_card.md; returns its path. `arm`: the study's view of
    this run's arm ({"study", "arm", "seeds", "stats": {metric: {"mean", "ci", "n"}}})."""
    path = os.path.join(workdir, CARD_FILE)
    text = render(workdir, arm)
    write_atomically(path, text)
    return path


def write_study_cards(summary: Mapping[str, Any]) -> list[str]:
    """Rewrites the card of every completed run of a study (its summary.json contents) with its
    arm's across-seed intervals; returns the paths written."""
    paths = []
    for name, arm in summary.get("arms", {}).items():
        finals = {m: e["final"] for m, e in arm.get("metrics", {}).items()}
        finals.update(
            {m: e["final"] for m, e in arm.get("evaluation", {}).get("headline", {}).items()}
        )
        stats = {
            metric: {"mean": final.get("mean"), "ci": final.get("t_ci"), "n": final.get("n")}
            for metric, final in finals.items()
        }
        view = {
            "study": summary.get("study"),
            "arm": name,
            "seeds": arm.get("seeds_completed"),
            "stats": stats,
        }
        for run in arm.get("runs", []):
            if run.get("status") in FINISHED:
                paths.append(write(run["workdir"], view))
    return paths


def _eval(workdir: str, name: str) -> dict[str, Any]:
    return read_json(eval_file(workdir, name)) or {}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _interval(ci: Any) -> str:
    if not ci or None in ci:
        return ""
    return f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def render(workdir: str, arm: Mapping[str, Any] | None = None) -> str:
    run = load_run(workdir)
    record = run.manifest or {}
    config = run.config or {}
    summary = _eval(workdir, "summary")
    model = config.get("model", {})
    dataset_name = config.get("data", {}).get("name", UNKNOWN)
    lines = [f"# Model card: {_model_name(model)} on {dataset_name}", ""]
    lines += [f"Run directory `{os.path.abspath(workdir)}`; status {run.status}.", ""]
    lines += _intended_use(arm)
    lines += _architecture(record, model)
    lines += _sparsity(record)
    lines += _quantization(workdir, config.get("quant", {}), summary)
    lines += _training_data(record, dataset_name, summary.get("data_sheet", ""))
    lines += _evaluation(summary, arm)
    # Only the suites of the last evaluation: files of an earlier one may describe another step.
    evaluated = set(summary.get("suites", []))
    for name, section in (
        ("calibration", _calibration),
        ("robustness", _robustness),
        ("slices", _slices),
        ("groups", _groups),
        ("generation", _generation),
    ):
        if name in evaluated:
            lines += section(_eval(workdir, name))
    lines += _privacy(record)
    lines += _compute(run, record)
    lines += _limitations(summary, record)
    lines += _license(dataset_name, summary.get("data_license", ""))
    return "\n".join(lines).rstrip() + "\n"


def _model_name(model: Mapping[str, Any]) -> str:
    if model.get("name") != "lm":
        return str(model.get("name", "model"))
    mixers = model.get("layer_pattern") or model.get("mixer", "?")
    return f"{mixers} language model"


def _intended_use(arm: Mapping[str, Any] | None) -> list[str]:
    study = f" in study `{arm['study']}` (arm `{arm['arm']}`)" if arm else ""
    return [
        "## Intended use",
        "",
        f"A research artifact{study}: evidence about an architecture or training choice on the "
        "task below, compared with other arms under the same budget. Not intended for "
        "deployment or for any decision about people; its training data is synthetic or a "
        "small benchmark and says nothing about other inputs.",
        "",
    ]


def _architecture(record: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    described = record.get("model", {})
    keys = ("name", "mixer", "layer_pattern", "num_layers", "d_model", "num_heads", "d_ff")
    shown = ", ".join(f"{k} {model[k]}" for k in keys if model.get(k) not in (None, ""))
    lines = ["## Architecture", "", f"- {shown}"]
    count = record.get("num_params")
    lines.append("- parameters: " + (f"{count:,}" if isinstance(count, int) else UNKNOWN))
    if described:
        lines.append(
            f"- analytic forward FLOPs per token {_fmt(described.get('flops_per_token'))}, "
            f"decoding state {_fmt(described.get('state_size'))} numbers per sequence"
        )
    return lines + [""]


def _sparsity(record: Mapping[str, Any]) -> list[str]:
    """The pruned run's sparsity per array (manifest `pruning`); nothing for a dense run."""
    pruning = record.get("pruning")
    if not pruning:
        return []
    how = pruning.get("scope") or pruning.get("pattern")
    lines = [
        "## Sparsity",
        "",
        f"{pruning.get('method', 'magnitude pruning')} to {_fmt(pruning.get('target_sparsity'))} "
        f"({how}) from step {pruning.get('start_step')} to {pruning.get('end_step')}, masks "
        f"updated every {pruning.get('every')} steps. At step {pruning.get('step')}, "
        f"{_fmt(pruning.get('sparsity'))} of the {pruning.get('targeted_weights'):,} targeted "
        "weights are zero; other parameters are dense.",
        "",
        "| parameter | size | fraction zero |",
        "|---|---:|---:|",
    ]
    for layer in pruning.get("layers", []):
        lines.append(f"| {layer['param']} | {layer['size']:,} | {layer['fraction_zero']:.4f} |")
    return lines + [""]


def _quantization(workdir: str, quant: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    mode = quant.get("mode", "none")
    if mode == "none":
        return []
    lines = ["## Quantization", ""]
    if mode == "qat_int8":
        return lines + [
            "Trained with quantization-aware training (`qat_int8`, qwix): every forward pass "
            "rounded the weights (one scale per output channel) and the inputs (one scale per "
            f"token) of the modules matching `{quant.get('targets')}` to int8 and back; gradients "
            "passed straight through. The parameters are stored float32: `python -m "
            "launch.quantize` writes the int8 run.",
            "",
        ]
    report = read_json(os.path.join(workdir, QUANTIZATION_FILE)) or {}
    source = report.get("source", {})
    activations = (
        "inputs rounded to int8 as it runs, one absmax scale per token"
        if mode == "ptq_int8"
        else "inputs float32"
    )
    lines += [
        f"Post-training quantization (`{mode}`, qwix) of run `{quant.get('source') or UNKNOWN}` "
        f"at step {source.get('step', UNKNOWN)}, trained with quant.mode "
        f"`{source.get('mode', UNKNOWN)}`. Stored int8 with a float32 absmax scale per output "
        f"channel ({activations}): {_grouped(report.get('quantized', [])) or UNKNOWN}. Every "
        "other parameter (embeddings, norms, a recurrence's gates and decays) is float32 as "
        "trained; the module paths quantized are those matching "
        f"`{quant.get('targets')}`.",
        "",
    ]
    before = read_json(os.path.join(workdir, SOURCE_EVAL_DIR, "summary.json")) or {}
    if not before or not summary:
        return lines + ["Not compared with the source (no evaluation of both).", ""]
    lines += [
        "The source model and this one, evaluated alike by launch.quantize "
        f"(`{SOURCE_EVAL_DIR}/`, `eval/`):",
        "",
        "| | source | quantized |",
        "|---|---|---|",
    ]
    rows = [("accuracy", before.get("accuracy"), summary.get("accuracy"))]
    rows.append(("NLL", before.get("nll"), summary.get("nll")))
    after = summary.get("headline", {})
    rows += [(k, v, after.get(k)) for k, v in before.get("headline", {}).items()]
    for key in ("checkpoint_bytes", "parameter_bytes"):
        sizes = report.get(key, {})
        rows.append((key.replace("_", " "), sizes.get("before"), sizes.get("after")))
    decode = report.get("decode", {})
    per_token = decode.get("seconds_per_token")
    if per_token:
        rows.append(
            (
                f"ms per generated token (batch {decode.get('batch')}, {decode.get('backend')})",
                1e3 * per_token["before"],
                1e3 * per_token["after"],
            )
        )
    lines += [f"| {name} | {_fmt(b)} | {_fmt(a)} |" for name, b, a in rows]
    if decode.get("method"):
        lines += ["", f"Decoding time: {decode['method']}."]
    return lines + [""]


def _grouped(paths: list[str]) -> str:
    """'block_*/channel/up/kernel (x4), unembed/kernel': one entry per path across blocks."""
    counts: dict[str, int] = {}
    for path in paths:
        key = re.sub(r"^block_\d+/", "block_*/", path)
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"`{k}`" + (f" (x{n})" if n > 1 else "") for k, n in counts.items())


def _training_data(record: Mapping[str, Any], name: str, data_sheet: str) -> list[str]:
    lines = ["## Training data", ""]
    fingerprint = record.get("datasets", {}).get(name)
    if not fingerprint:
        return lines + [f"- {name}: fingerprint {UNKNOWN}", ""]
    sheet = fingerprint.get("data_sheet", {})
    lines += [
        f"- dataset `{name}` {fingerprint.get('version', '')}, config "
        f"`{fingerprint.get('config_name', '')}`",
        f"- splits: {fingerprint.get('splits', UNKNOWN)}",
        f"- content hash: `{fingerprint.get('content_hash', UNKNOWN)}`",
        f"- provenance: {sheet.get('source', UNKNOWN)}; size {sheet.get('size', UNKNOWN)}",
    ]
    overlap = fingerprint.get("overlap")
    if overlap is None:
        lines.append(f"- train/evaluation overlap: {UNKNOWN}")
    else:
        verdict = (
            "**LEAK: evaluation examples also occur in train**"
            if overlap.get("leak")
            else "no evaluation example found in train"
        )
        lines.append(f"- train/evaluation overlap: {verdict} ({_overlap_counts(overlap)})")
    if data_sheet:
        lines += ["", "<details><summary>Data sheet</summary>", "", data_sheet, "", "</details>"]
    return lines + [""]


def _overlap_counts(overlap: Mapping[str, Any]) -> str:
    """'test: 0 of 300 exact, 0 near-duplicate; train: 0 duplicates' from data/overlap.py's
    record."""
    parts = [
        f"{split}: {counts['exact']['count']} of {counts['examples']} exact copies, "
        f"{counts['near']['count']} near-duplicates"
        for split, counts in (overlap.get("eval") or {}).items()
    ]
    duplicates = (overlap.get("train_duplicates") or {}).get("count")
    if duplicates is not None:
        parts.append(f"{duplicates} duplicates within train")
    return "; ".join(parts) or "no counts"


def _evaluation(summary: Mapping[str, Any], arm: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Evaluation", ""]
    if not summary:
        return lines + ["Not evaluated (run `python -m launch.evaluate --workdir=<run>`).", ""]
    lines.append(
        f"On the `{summary.get('split')}` split at step {summary.get('step')} "
        f"({summary.get('items')} scored items): accuracy {_fmt(summary.get('accuracy'))}"
        f"{_interval(summary.get('accuracy_ci'))} (95% Wilson interval over items), "
        f"NLL {_fmt(summary.get('nll'))}."
    )
    if arm and arm.get("stats"):
        lines += [
            "",
            f"Across the arm's {arm.get('seeds')} seeds (mean, 95% t-interval over seeds):",
            "",
            "| metric | mean | interval | seeds |",
            "|---|---|---|---|",
        ]
        for metric, stat in arm["stats"].items():
            lines.append(
                f"| {metric} | {_fmt(stat.get('mean'))} | {_interval(stat.get('ci')).strip()} "
                f"| {stat.get('n', '—')} |"
            )
    return lines + [""]


def _calibration(result: Mapping[str, Any]) -> list[str]:
    if not result:
        return []
    lines = ["## Calibration", ""]
    if result.get("not_applicable"):
        return lines + [f"Not applicable: {result['not_applicable']}.", ""]
    before, after = result["metrics"], result["metrics"].get("after_temperature", {})
    lines += [
        f"Temperature {_fmt(result['headline'].get('temperature'))} fitted on "
        f"{result.get('fitted_on')}; reported on {result.get('reported_on')}.",
        "",
        "| | ECE (equal width) | ECE (equal mass) | MCE | Brier | NLL |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in (("before", before), ("after temperature scaling", after)):
        lines.append(
            f"| {label} | {_fmt(m.get('ece_equal_width'))} | {_fmt(m.get('ece_equal_mass'))} | "
            f"{_fmt(m.get('mce_equal_width'))} | {_fmt(m.get('brier'))} | {_fmt(m.get('nll'))} |"
        )
    return lines + ["", "![reliability](eval/reliability.png)", ""]


def _robustness(result: Mapping[str, Any]) -> list[str]:
    if not result:
        return []
    lines = ["## Robustness", ""]
    for name, points in result.get("curves", {}).items():
        shown = ", ".join(f"{_fmt(p['x'])}: {_fmt(p['accuracy'], 3)}" for p in points)
        lines.append(f"- {name.replace('_', ' ')} (x: accuracy): {shown}")
    for name, reason in (result.get("not_applicable") or {}).items():
        lines.append(f"- {name}: not applicable: {reason}")
    return lines + ["", "![robustness](eval/robustness.png)", ""]


def _slices(result: Mapping[str, Any]) -> list[str]:
    if not result:
        return []
    lines = ["## Slices", ""]
    for name, rows in result.get("tables", {}).items():
        shown = ", ".join(f"{r['slice']}: {_fmt(r['accuracy'], 3)} (n {r['items']})" for r in rows)
        worst = (result.get("worst") or {}).get(name)
        named = f"; worst: **{worst['slice']}**" if worst else ""
        lines.append(f"- by {name.replace('_', ' ')}: {shown}{named}")
    if result.get("hardest"):
        lines.append(f"- the hardest items, written out: `eval/{result['hardest']}`")
    return lines + [""]


def _groups(result: Mapping[str, Any]) -> list[str]:
    if not result:
        return []
    lines = ["## Group gaps", ""]
    if result.get("not_applicable"):
        return lines + [f"Not applicable: {result['not_applicable']}.", ""]
    lines += ["| group | items | accuracy | ECE | NLL |", "|---|---|---|---|---|"]
    for row in result.get("groups", []):
        lines.append(
            f"| {row['group']} | {row['items']} | {_fmt(row['accuracy'])}"
            f"{_interval(row.get('accuracy_ci'))} | {_fmt(row['ece'])} | {_fmt(row['nll'])} |"
        )
    headline = result.get("headline", {})
    lines += [
        "",
        f"Accuracy gap {_fmt(headline.get('accuracy_gap'))}, ECE gap "
        f"{_fmt(headline.get('ece_gap'))}; worst group: {result.get('worst_group')}.",
        "",
    ]
    return lines


def _generation(result: Mapping[str, Any]) -> list[str]:
    if not result:
        return []
    lines = ["## Generation", ""]
    if result.get("file") is None:
        return lines + [f"Not applicable: {result.get('not_applicable')}.", ""]
    headline = result.get("headline", {})
    per_token = headline.get("seconds_per_token")
    return lines + [
        f"Greedy continuations of {result['prompts']} evaluation prompts of "
        f"{result['prompt_tokens']} tokens, {result['new_tokens']} new tokens each: "
        f"`eval/{result['file']}`. Decoding state {_fmt(headline.get('state_bytes_per_sequence'))}"
        f" bytes per sequence at {result['cache_positions']} positions; "
        + (f"{_fmt(per_token * 1e3, 3)} ms per token." if per_token is not None else "untimed."),
        "",
    ]


def _privacy(record: Mapping[str, Any]) -> list[str]:
    privacy = record.get("privacy")
    if not privacy:
        return ["## Privacy", "", "Trained without differential privacy: no guarantee.", ""]
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in privacy.items() if not isinstance(v, dict))
    return ["## Privacy", "", f"Differentially private training: {shown}.", ""]


def _compute(run: Any, record: Mapping[str, Any]) -> list[str]:
    from analysis.study import compute_used  # the study's own accounting, for one run

    used = compute_used([run])
    env = record.get("environment", {})
    return [
        "## Compute",
        "",
        f"- {used['steps']} steps, {used['tokens']:,} tokens (examples for image tasks), "
        f"{used['wall_seconds']:.0f} s in launch.train, ~{used['flops']:.3g} training FLOPs "
        "(3 x analytic forward FLOPs)",
        f"- devices: {env.get('device_count', UNKNOWN)} x "
        f"{(env.get('devices') or [UNKNOWN])[0]} ({env.get('backend', UNKNOWN)}), "
        f"{env.get('process_count', UNKNOWN)} process(es), mesh {env.get('mesh', UNKNOWN)}",
        "",
    ]


def _limitations(summary: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    lines = ["## Known limitations", ""]
    for suite, reason in (summary.get("not_applicable") or {}).items():
        lines.append(f"- {suite}: {reason}")
    datasets = record.get("datasets", {})
    leaks = [name for name, f in datasets.items() if (f.get("overlap") or {}).get("leak")]
    if leaks:
        lines.append(
            f"- evaluation data leaks from train in {', '.join(leaks)}: accuracy is "
            "inflated by memorised examples"
        )
    headline = summary.get("headline", {})
    for key, value in headline.items():
        if key.startswith("slices/worst_accuracy/") and value is not None:
            lines.append(
                f"- weakest slice by {key.rsplit('/', 1)[1].replace('_', ' ')}: "
                f"accuracy {_fmt(value, 3)}"
            )
    lines.append("- one run is one seed: compare arms only through a study's across-seed intervals")
    return lines + [""]


def _license(dataset_name: str, data_license: str) -> list[str]:
    return [
        "## License",
        "",
        "- weights and code: archlab declares no license yet (ask the pod before sharing)",
        f"- data ({dataset_name}): {data_license or UNKNOWN}",
        "",
    ]
