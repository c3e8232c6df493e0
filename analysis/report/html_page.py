"""The report's blocks as one self-contained HTML page (`report.html`): inline CSS, PNGs as
data URIs, no scripts, nothing fetched. Everything that came from the summary is escaped: log
tails and config values are arbitrary text."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence

from analysis.report.blocks import (
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
from analysis.report.style import CSS

# Verdict colours (text, background): restrained, and distinguishable by their words too.
OUTCOME_COLORS = {
    "supported": ("#1a7f37", "#dafbe1"),
    "refuted": ("#cf222e", "#ffebe9"),
    "inconclusive": ("#9a6700", "#fff8c5"),
}
UNKNOWN_OUTCOME_COLORS = ("#57606a", "#eaeef2")


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
