"""A study's report: its summary as Markdown and as one self-contained HTML page, with plots.

`write_reports(study_dir, summary)` renders the dict the study aggregator writes to
`<study_dir>/summary.json`, as loaded from that file. It writes

    report.md      the same facts as plain text, for a terminal or a pull request
    report.html    the page a person opens: the verdicts first, plots embedded as data URIs,
                   inline CSS, no scripts and nothing fetched from elsewhere
    plots/learning_curves.png, plots/primary_metric.png

Both files are rendered from one list of blocks (sections.py: what each section says, as
blocks.py's headings, tables, verdict cards, ...), so they cannot drift apart in what they say;
markdown.py and html_page.py render them, analysis/study_plots.py draws the plots. Rendering is
defensive (analysis/summary_reader.py): an optional key may be missing, a number may be NaN or
None (JSON null), an arm may have no completed seed; the report still comes out and shows "—"
for what is not known.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from analysis import study_plots
from analysis.report.blocks import PLOTS_DIR
from analysis.report.html_page import render_html
from analysis.report.markdown import render_markdown
from analysis.report.sections import CURVES_PNG, PRIMARY_PNG, report_blocks
from atomic_write import write_atomically


def write_reports(study_dir: str, summary: Mapping[str, Any]) -> dict[str, str]:
    """Writes report.md, report.html and plots/*.png under `study_dir`; returns their paths.

    The keys of the result are "md", "html", "learning_curves" and "primary_metric".
    """
    plots_dir = os.path.join(study_dir, PLOTS_DIR)
    os.makedirs(plots_dir, exist_ok=True)
    images = {
        CURVES_PNG: study_plots.learning_curves_png(summary),
        PRIMARY_PNG: study_plots.primary_metric_png(summary),
    }
    paths = {
        "learning_curves": os.path.join(plots_dir, CURVES_PNG),
        "primary_metric": os.path.join(plots_dir, PRIMARY_PNG),
        "md": os.path.join(study_dir, "report.md"),
        "html": os.path.join(study_dir, "report.html"),
    }
    write_atomically(paths["learning_curves"], images[CURVES_PNG])
    write_atomically(paths["primary_metric"], images[PRIMARY_PNG])
    blocks = report_blocks(summary)
    title = f"Study report: {summary.get('study') or 'unnamed study'}"
    write_atomically(paths["md"], render_markdown(blocks).encode())
    write_atomically(paths["html"], render_html(blocks, title, images).encode())
    return paths
