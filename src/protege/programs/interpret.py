"""protege's interpreter for field programs: a program and a task input give a value or `REFUSED`.

A program refuses — and leaves its field to the next tier — whenever it cannot stand behind a value: its source
text is missing, a region's delimiter is absent, a span has no match (unless the traces showed null then), a
matched text does not parse as the field's number (or a scale word follows it: `two dozen`), or a list/count
comes out empty where no trace ever was.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Any

from protege.programs.dates import reference_date, written_date
from protege.programs.language import GLUE, SEPARATORS, Program


class _Refused:
    """The one value a program returns when it does not apply to an input."""

    def __repr__(self) -> str:
        return "REFUSED"

    def __bool__(self) -> bool:
        return False


REFUSED: Any = _Refused()
_INT = re.compile(r"-?[0-9]+")
NUMBER_WORDS = tuple(
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
)
"""English number words the `int` map reads (`seven Meeting Tables`)."""
SCALED = re.compile(r"[ \t-]*(?:dozens?|hundreds?|thousands?|millions?|billions?|score|gross)\b", re.IGNORECASE)
"""A number followed by one of these words is not the number written (`two dozen` is 24, `5 hundred` 500): a
numeric span that ends right before one refuses, so the student reads it."""
_FLOAT = re.compile(r"-?[0-9]+(?:[.,][0-9]+)?")
_SPACES = re.compile(r"\s+")
_SEPARATORS = re.compile(SEPARATORS)
_GLUE = re.compile(GLUE)
EMPTY: dict[str, Any] = {"all": [], "split": [], "count": 0, "nsplit": 0}
"""What a list or count program answers for an input without its region, when its `absent_null` is set."""


def source_text(data: Any, path: tuple[str, ...]) -> str | None:
    """The string leaf of a task input at `path` (None when absent or not text)."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data if isinstance(data, str) else None


def region_of(text: str, start: str, end: str, each: bool = False) -> str | None:
    """The text after the first `start` and before the next `end`; None when a delimiter is missing. With `each`,
    every such piece, one per line (`Closes: #1, #2` wherever it occurs)."""
    if not each:
        return _piece(text, 0, start, end)[0]
    pieces: list[str] = []
    at = 0
    while True:
        piece, at = _piece(text, at, start, end)
        if piece is None:
            return "\n".join(pieces) if pieces else None
        pieces.append(piece)


def run_region(text: str, start: str, fold: bool, item: re.Pattern[str]) -> str | None:
    """The items of every list that follows `start` — matched by `item` one after another with only list glue
    between them — one per line, so the program's pattern finds exactly them again (not a glue word such as
    `and`). None when no `start` is followed by an item."""
    items = []
    for found in _literal(start, fold).finditer(text):
        at = found.end()
        while (match := _next_item(text, at, item)) is not None:
            items.append(match.group(0))
            at = match.end()
    return "\n".join(items) if items else None


def _next_item(text: str, at: int, item: re.Pattern[str]) -> re.Match[str] | None:
    """The item right after the list glue at `at` (None: the list ends here)."""
    glue = _GLUE.match(text, at)
    match = item.match(text, glue.end() if glue else at)
    return match if match is not None and match.end() > match.start() else None


@lru_cache(maxsize=256)
def _literal(start: str, fold: bool) -> re.Pattern[str]:
    return re.compile(re.escape(start), re.IGNORECASE if fold else 0)


def _piece(text: str, at: int, start: str, end: str) -> tuple[str | None, int]:
    i = text.find(start, at) if start else at
    if i < 0:
        return None, len(text)
    i += len(start)
    if not end:
        return text[i:], len(text) + 1
    j = text.find(end, i)
    return (None, len(text)) if j < 0 else (text[i:j], max(j, i + 1))


def apply_map(name: str, text: str, reference: date | None = None) -> Any:
    """A matched text through a value map; REFUSED when it does not parse. `reference`: the input's own date,
    which gives a yearless written date its year (the `date` map)."""
    if name == "id":
        return text
    if name == "strip":
        return text.strip()
    if name == "lower":
        return text.strip().lower()
    if name == "upper":
        return text.strip().upper()
    if name == "squash":
        return _SPACES.sub(" ", text).strip()
    t = text.strip()
    if name == "int":
        if _INT.fullmatch(t):
            return int(t)
        return NUMBER_WORDS.index(t.lower()) if t.lower() in NUMBER_WORDS else REFUSED
    if name == "float":
        return float(t.replace(",", ".")) if _FLOAT.fullmatch(t) else REFUSED
    if name == "date":
        return written_date(t, reference) or REFUSED
    raise ValueError(f"unknown map {name!r}")


def run(program: Program, data: dict[str, Any], reference: date | None = None) -> Any:
    """The program's value on a task input (a JSON dict), or REFUSED. `reference`: the input's own date when the
    caller has looked it up already (a chain of date programs); else the `date` map looks it up."""
    if program.op == "const":
        return program.value
    text = source_text(data, program.source)
    if text is None:
        return REFUSED
    if program.map == "date" and reference is None:
        reference = reference_date(data)
    return run_on_text(program, text, reference)


def run_on_text(program: Program, text: str, reference: date | None = None) -> Any:
    """The program's value on its source text (induction calls this with texts it has already looked up).
    `reference`: the input's own date, for the `date` map (`dates.reference_date`)."""
    region = span_region(program, text)
    if region is None:  # no region: refuse, unless the traces said "none" whenever it was missing
        return EMPTY.get(program.op, None) if program.absent_null and program.op != "span" else REFUSED
    if program.op in ("split", "nsplit"):
        return _split(program, region, reference)
    regex = program.pattern.regex  # type: ignore[union-attr]
    if program.op == "has":
        return (regex.search(region) is None) if program.negate else (regex.search(region) is not None)
    if program.op == "count":
        matches = [m.group(1) for m in regex.finditer(region)]
        n = len(set(matches)) if program.unique else len(matches)
        return REFUSED if n == 0 and program.empty_refuses or n + program.offset < 0 else n + program.offset
    if program.op == "all":
        items = [_number(program.map, m, region, reference) for m in regex.finditer(region)]
        if any(item is REFUSED for item in items) or (not items and program.empty_refuses):
            return REFUSED
        return ordered(items, program.unique, program.ascending)
    return _span(program, regex, region, reference)


def ordered(items: list[Any], unique: bool, ascending: bool) -> Any:
    """A list's items with repeats dropped (the first kept) and/or sorted; REFUSED when they cannot be sorted."""
    if unique:
        items = list(dict.fromkeys(items))
    if ascending:
        try:
            items = sorted(items)
        except TypeError:  # mixed types (a number beside a word) have no order
            return REFUSED
    return items


def _span(program: Program, regex: re.Pattern[str], text: str, reference: date | None) -> Any:
    if program.sole and match_count(regex, text, 2) > 1:
        return REFUSED  # two candidates where the traces only ever showed one
    if program.occurrence == 0:
        match = regex.search(text)
    else:
        matches = list(regex.finditer(text))
        k = program.occurrence
        match = matches[k] if -len(matches) <= k < len(matches) else None
    if match is None:
        return None if program.absent_null else REFUSED
    if program.empty_null and not match.group(1).strip():
        return None
    value = _number(program.map, match, text, reference)
    return program.prefix + value if program.prefix else value


def match_count(regex: re.Pattern[str], text: str, most: int) -> int:
    """How many times `regex` matches `text`, counted up to `most`."""
    n = 0
    for _ in regex.finditer(text):
        n += 1
        if n >= most:
            break
    return n


def span_region(program: Program, text: str) -> str | None:
    """The text a span program searches: its region of `text` (None where the region is absent)."""
    r = program.region
    if r.run:
        return run_region(text, r.start, r.fold, program.pattern.regex)  # type: ignore[union-attr]
    return region_of(text, r.start, r.end, r.each)


def _number(map_name: str, match: re.Match[str], text: str, reference: date | None) -> Any:
    """A match through its map; REFUSED where a number is scaled by the word after it (`two dozen`)."""
    if map_name in ("int", "float") and SCALED.match(text, match.end(1)):
        return REFUSED
    return apply_map(map_name, match.group(1), reference)


def list_items(text: str) -> list[str]:
    """The items of a delimited list (`Ana, Bo and Cy`): split at the separators, blanks dropped."""
    return [part for part in (p.strip() for p in _SEPARATORS.split(text.strip())) if part]


def _split(program: Program, region: str, reference: date | None) -> Any:
    items = [apply_map(program.map, item, reference) for item in list_items(region)]
    if any(item is REFUSED for item in items) or (not items and program.empty_refuses):
        return REFUSED
    return len(items) if program.op == "nsplit" else ordered(items, program.unique, program.ascending)
