"""Written dates as ISO dates, for the `date` map of field programs (`Needed by January 24th.` → 2025-01-24).

A date written without its year (`January 24th`, `Sat 18 Jan`) takes the year that puts it nearest the input's own
date: the first text leaf of the input that is a whole date with a year (an email's `Date:` header, an ISO
timestamp). So `January 8` in a mail of 8 November 2025 is 2026-01-08, and `May 27` in one of 11 June is the
same year's. Without such a leaf a yearless date refuses, as does anything that is not one whole date: a
slashed date whose day and month could be swapped (`03/04/2025`), a day the month does not have.

Standard library only, and no name from the rest of protege: `render.py` copies this module's source into the
readable `fields.py` of a task's skill, so the module and the interpreter cannot drift apart.
"""

from __future__ import annotations

import datetime as _dt
import email.utils as _email_utils
import re as _re

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sept", "sep"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-9]{1,2})(?:st|nd|rd|th)?"
_THE = r"(?:the\s+)?"  # `the 31st of October`
_YEAR = r"(?P<year>[0-9]{4})"
_WEEKDAY = r"(?:(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(?:day|nesday|sday|urday)?\.?,?\s+)?"
_FORMS = (
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})",  # 2025-01-24
    r"(?P<year>[0-9]{4})/(?P<month>[0-9]{1,2})/(?P<day>[0-9]{1,2})",  # 2025/01/24
    r"(?P<day>[0-9]{1,2})\.(?P<month>[0-9]{1,2})\.(?P<year>[0-9]{4}|[0-9]{2})",  # 24.01.2025: day first
    r"(?P<a>[0-9]{1,2})/(?P<b>[0-9]{1,2})/(?P<year>[0-9]{4})",  # 1/24/2025 or 24/1/2025: only where one order fits
    _WEEKDAY + _THE + _DAY + r"(?:\s+of)?\s+" + _MONTH + r"(?:,?\s+" + _YEAR + ")?",  # 24 January 2025, Sat 18 Jan
    _WEEKDAY + _MONTH + r"\s+" + _DAY + r"(?:,?\s+" + _YEAR + ")?",  # January 24th, 2025; Saturday, January 18
)
_WHOLE = [_re.compile(form, _re.IGNORECASE) for form in _FORMS]
DATE_MENTION = _re.compile(
    r"(?<![\w/.-])(?:" + "|".join(_re.sub(r"\?P<\w+>", "", form) for form in _FORMS) + r")(?![\w/-]|\.[0-9])",
    _re.IGNORECASE,
)
"""Where a text writes a date (for finding the span a date value was read from)."""
_TRAILING = " \t\n.,;:!?)"
_REFERENCE_MAX = 64  # characters: a leaf longer than this is prose, not a date header


def written_date(text: str, reference: _dt.date | None) -> str | None:
    """`text`, one whole written date, as `YYYY-MM-DD`; None when it is not one, or has no year and there is no
    `reference` to take the nearest year from."""
    t = text.strip().rstrip(_TRAILING).lstrip(" \t\n(")
    for form in _WHOLE:
        m = form.fullmatch(t)
        if m is not None:
            return _iso(m.groupdict(), reference)
    return None


def _iso(parts: dict[str, str | None], reference: _dt.date | None) -> str | None:
    if parts.get("a") is not None:  # a slashed date: month/day or day/month, whichever alone is a date
        a, b = int(parts["a"] or 0), int(parts["b"] or 0)
        orders = {(a, b), (b, a)} if a != b else {(a, b)}
        fits = [(mo, d) for mo, d in orders if 1 <= mo <= 12 and 1 <= d <= 31]
        if len(fits) != 1:
            return None
        month, day = fits[0]
    else:
        month_text, day = parts["month"] or "", int(parts["day"] or 0)
        month = int(month_text) if month_text.isdigit() else _MONTHS[month_text.lower().rstrip(".")]
    year_text = parts.get("year")
    if year_text:
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        return _valid(year, month, day)
    if reference is None:
        return None
    candidates = [c for y in (reference.year - 1, reference.year, reference.year + 1) if (c := _day(y, month, day))]
    return min(candidates, key=lambda c: abs((c - reference).days)).isoformat() if candidates else None


def _day(year: int, month: int, day: int) -> _dt.date | None:
    try:
        return _dt.date(year, month, day)
    except ValueError:
        return None


def _valid(year: int, month: int, day: int) -> str | None:
    found = _day(year, month, day)
    return found.isoformat() if found else None


def reference_date(data: object) -> _dt.date | None:
    """The input's own date: its first text leaf (in key order, depth first) that is a whole date with a year —
    an email header (`Fri, 13 Dec 2024 17:52:00 +0100`), an ISO date or timestamp, a written date."""
    for text in _leaves(data):
        t = text.strip()
        if len(t) > _REFERENCE_MAX or not _re.search(r"[0-9]{4}", t):
            continue
        found = _parsed(t)
        if found is not None:
            return found
    return None


def _parsed(t: str) -> _dt.date | None:
    try:
        return _dt.datetime.fromisoformat(t.replace("Z", "+00:00")).date()
    except ValueError:
        pass
    try:
        stamp = _email_utils.parsedate_to_datetime(t)
    except (TypeError, ValueError, IndexError):
        stamp = None
    if stamp is not None:
        return stamp.date()
    written = written_date(t, None)
    return _dt.date.fromisoformat(written) if written else None


def _leaves(data: object):
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _leaves(value)
