"""The report as a document: the blocks (headings, tables, verdict cards, ...) that
analysis/report/sections.py builds and both renderers, Markdown and HTML, understand."""

from __future__ import annotations

import dataclasses

PLOTS_DIR = "plots"  # where the PNGs an `Image` names lie, beside report.md


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
