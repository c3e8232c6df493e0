"""Numbers as the report shows them: a few significant digits, p-values, counts, durations,
timestamps, and "—" for anything not known (NaN, None, missing)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

from analysis.summary_reader import as_float, as_pair

DASH = "—"  # what an unknown number (NaN, None, missing) shows as
HASH_CHARS = 12  # a config hash or commit is shown this long; the full one is in summary.json


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


def mean_pm(stat: Mapping[str, Any]) -> str:
    """A Summary dict as "mean ± half-width of its t-interval"."""
    if not stat or not as_float(stat.get("n")) > 0:
        return DASH
    lo, hi = as_pair(stat.get("t_ci"))
    return f"{fmt_number(stat.get('mean'))} ± {fmt_number((hi - lo) / 2)}"


def ci_bounds(stat: Mapping[str, Any]) -> str:
    if not stat or not as_float(stat.get("n")) > 0:
        return DASH
    lo, hi = as_pair(stat.get("t_ci"))
    return f"[{fmt_number(lo)}, {fmt_number(hi)}]"
