"""The report's blocks as Markdown (`report.md`): the same facts as the page, as plain text
for a terminal or a pull request."""

from __future__ import annotations

import re
from collections.abc import Sequence

from analysis.report.blocks import (
    PLOTS_DIR,
    Alert,
    Block,
    Bullets,
    Claims,
    Heading,
    Headline,
    Image,
    Paragraph,
    Preformatted,
    Table,
)


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
