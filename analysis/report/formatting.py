"""Numbers as the report shows them: a few significant digits, p-values, counts, durations,
timestamps, and "—" for anything not known (NaN, None, missing)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.summary_reader import as_float, as_list, as_pair

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


def fmt_seed_values(values: Sequence[Any]) -> str:
    """Each seed's value, in seed order, to one number of decimals: "0.999 0.998 1.000", so that
    a bimodal arm ("0.081 0.079 0.997") shows as such. The decimals give the values' typical
    size three significant digits; far from 1 they are written as 3.1e-05."""
    xs = [as_float(v) for v in as_list(values)]
    finite = [abs(x) for x in xs if math.isfinite(x)]
    if not xs:
        return DASH
    typical = sum(finite) / len(finite) if finite else 0.0
    if typical and not 1e-3 <= typical < 1e6:
        return " ".join(fmt_number(x, 3) if math.isfinite(x) else fmt_number(x) for x in xs)
    decimals = max(0, 2 - math.floor(math.log10(typical))) if typical else 3
    return " ".join(f"{x:.{decimals}f}" if math.isfinite(x) else fmt_number(x) for x in xs)


def fraction_ci(fraction: Mapping[str, Any]) -> str:
    """A solve fraction (analysis.proportions.Fraction, as the summary has it) as
    "1/3 [0.0084, 0.91]": solved of n seeds, and the exact interval of the rate."""
    solved, n = as_float(fraction.get("solved")), as_float(fraction.get("n"))
    if not (math.isfinite(solved) and n > 0):
        return DASH
    lo, hi = as_pair(fraction.get("ci"))
    return f"{int(solved)}/{int(n)} [{fmt_number(lo, 2)}, {fmt_number(hi, 2)}]"
