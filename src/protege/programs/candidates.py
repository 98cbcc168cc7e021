"""Candidate programs read off one example, FlashFill-style: where the answer occurs in the input's text, the
contexts around it (literal delimiters at token boundaries, line starts and ends, token classes) are the
programs that could have produced it. Counts and lists get patterns from the text's recurring line shapes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

from protege.programs.dates import DATE_MENTION, written_date
from protege.programs.interpret import NUMBER_WORDS
from protege.programs.language import CLASSES, GLUE, Pattern, Program, Region

MAX_CONTEXT = 32  # characters of left context at most
MAX_OCCURRENCES = 3  # places an answer is looked for in one text
MAX_PREFIX, MIN_TAIL = 8, 3  # a constant prefix is short; the written tail after it is not
_BOUNDARY = re.compile(r"(?<=[\s\W])|^", re.M)
_CLASSES = {name: re.compile(CLASSES[name]) for name in ("int", "number", "word", "token", "email")}
_NUMBERISH = re.compile(r"-?[0-9]+(?:[.,][0-9]+)?")
_LEAD = re.compile(r"^[ \t]*([^\w\s]+[ \t]*|[0-9]+[.)][ \t]*|\w+:[ \t]*)?", re.M)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def lefts(text: str, i: int) -> list[tuple[str, bool]]:
    """Left contexts of position i: ("", False), then literals that start at a token boundary on i's line
    (shortest first), each also line-anchored when only indentation precedes it."""
    line_start = text.rfind("\n", 0, i) + 1
    out: list[tuple[str, bool]] = [("", False)]
    lo = max(line_start, i - MAX_CONTEXT)
    for k in range(i - 1, lo - 1, -1):
        if k > line_start and not (_is_boundary(text, k)):
            continue
        literal = text[k:i]
        if not literal.strip() and k != line_start:
            continue
        out.append((literal, False))
        if not text[line_start:k].strip():
            out.append((literal, True))
    if i == line_start or not text[line_start:i].strip():
        out.append(("", True))
    return out


def _is_boundary(text: str, k: int) -> bool:
    """A literal may start at k when k starts a word or a punctuation run (not mid-word)."""
    prev, cur = text[k - 1], text[k]
    return prev.isspace() or (not prev.isalnum() and cur.isalnum()) or (prev.isalnum() and not cur.isalnum())


def rights(text: str, j: int) -> list[str]:
    """Right contexts of position j: nothing, the next character, and the text up to the next token boundary."""
    out = [""]
    if j < len(text):
        out.append(text[j])
        m = re.match(r"[^\w\n]*\w*", text[j : j + MAX_CONTEXT])
        if m and len(m.group(0)) > 1:
            out.append(m.group(0))
        token = re.match(r"[^\w\n]*\w+[^\w\n]", text[j : j + MAX_CONTEXT])  # `x ` of `3x Desk`, ` x ` of `3 x Desk`
        if token and token.group(0) not in out:
            out.append(token.group(0))
        punct = re.match(r"[^\w\n]+", text[j : j + MAX_CONTEXT])  # ` <` before an address, `) ` after a version
        if punct and len(punct.group(0)) > 1 and punct.group(0) not in out:
            out.append(punct.group(0))
        blank = re.match(r"[ \t]*\n\s*\n", text[j : j + MAX_CONTEXT])  # a paragraph's end
        if blank:
            out.append(blank.group(0))
    return out


def classes_for(text: str, i: int, j: int) -> list[str]:
    """Token classes that match text[i:j] exactly and end there, plus line-rest and lazy spans."""
    piece = text[i:j]
    out = []
    for name, regex in _CLASSES.items():
        if regex.fullmatch(piece) and not (j < len(text) and regex.fullmatch(text[i : j + 1])):
            out.append(name)
    if "\n" not in piece:
        eol = text.find("\n", j)
        if not text[j : eol if eol >= 0 else len(text)].strip():
            out.append("rest")
        out.append("lazy")
    return out


def occurrences(text: str, value: Any) -> list[tuple[int, int, str]]:
    """Where a value is written in the text: (start, end, the map that turns the written text into it)."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        found = [
            (m.start(), m.end(), "int" if isinstance(value, int) else "float")
            for m in _NUMBERISH.finditer(text)
            if _same_number(m.group(0), value)
        ]
        if isinstance(value, int) and 0 <= value < len(NUMBER_WORDS):  # `seven Meeting Tables`
            word = re.compile(r"\b" + NUMBER_WORDS[value] + r"\b", re.I)
            found += [(m.start(), m.end(), "int") for m in word.finditer(text)]
        return sorted(found)[:MAX_OCCURRENCES]
    if not isinstance(value, str) or not value.strip():
        return []
    found = [(m.start(), m.end(), "id") for m in re.finditer(re.escape(value), text)]
    if not found:
        lower = text.lower()
        case = "lower" if value == value.lower() else "upper" if value == value.upper() else None
        if case:
            found = [(m.start(), m.end(), case) for m in re.finditer(re.escape(value.lower()), lower)]
    return found[:MAX_OCCURRENCES]


def _same_number(written: str, value: int | float) -> bool:
    try:
        return float(written.replace(",", ".")) == float(value) and (
            isinstance(value, float) or "." not in written and "," not in written
        )
    except ValueError:
        return False


def patterns_at(text: str, i: int, j: int) -> Iterator[Pattern]:
    """Patterns whose capture could be text[i:j]: contexts x classes, a kept literal prefix, a preceding token."""
    for cls in classes_for(text, i, j):
        for left, line in lefts(text, i):
            for right in rights(text, j):
                if cls == "lazy" and not right or cls == "rest" and right:
                    continue
                if cls == "lazy" and not left and not line:
                    continue  # unanchored lazy spans rescan each line from every position: slow on long lines
                yield Pattern(left=left, cls=cls, right=right, line=line)
    piece = text[i:j]
    for m in range(1, min(len(piece), 12)):
        if not piece[m - 1].isdigit() and piece[m:].isdigit() and piece[m:].isascii():
            yield Pattern(left=piece[:m], cls="int", keep=True)
    sep = re.search(r"[ \t:=]*$", text[max(0, i - 4) : i])
    k = i - len(sep.group(0)) if sep else i
    for pre in ("number", "word"):
        before = re.search("(?:" + CLASSES[pre] + ")$", text[max(0, k - 20) : k])
        if before and before.group(0):
            leads = [lead for lead, line in lefts(text, k - len(before.group(0))) if not line]
            for cls in classes_for(text, i, j):
                for right in rights(text, j):
                    if not (cls == "lazy" and not right or cls == "rest" and right):
                        for lead in leads[:4]:
                            yield Pattern(left=text[k:i], cls=cls, right=right, pre=pre, lead=lead)


def span_candidates(source: tuple[str, ...], text: str, value: Any, reference: date | None = None) -> Iterator[Program]:
    """Span programs that give `value` on `text`: where it is written, or (for text not written as is) where its
    tail is, after a constant prefix (`ORD-` + the digits of `order no. 123456`), or (for an ISO date) where a
    date is written that reads as it (`January 24th` in a mail of December 2024: `reference`, the input's date)."""
    found = occurrences(text, value)
    for prefix, rest in [("", value)] if found else prefixed(text, value):
        for i, j, map_name in occurrences(text, rest):
            yield from _spans_at(source, text, i, j, map_name, prefix)
    for i, j in date_occurrences(text, value, reference):
        yield from _spans_at(source, text, i, j, "date", "")


def _spans_at(source: tuple[str, ...], text: str, i: int, j: int, map_name: str, prefix: str) -> Iterator[Program]:
    for pattern in patterns_at(text, i, j):
        maps = [map_name] + (["strip"] if map_name == "id" and pattern.cls in ("rest", "lazy") else [])
        for nth in _nth(pattern, text, i):
            for m in maps:
                yield Program("span", source, pattern, occurrence=nth, map=m, prefix=prefix)


def date_occurrences(text: str, value: Any, reference: date | None) -> list[tuple[int, int]]:
    """Where the text writes a date that the `date` map reads as `value` (an ISO date), at most MAX_OCCURRENCES."""
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return []
    found = [(m.start(), m.end()) for m in DATE_MENTION.finditer(text) if written_date(m.group(0), reference) == value]
    return found[:MAX_OCCURRENCES]


def prefixed(text: str, value: Any) -> list[tuple[str, str]]:
    """A text value split into a short constant prefix and the longest tail the text holds ([] when none)."""
    if not isinstance(value, str):
        return []
    for m in range(1, min(MAX_PREFIX, len(value) - MIN_TAIL) + 1):
        if value[m:] in text and not value[m - 1].isspace():
            return [(value[:m], value[m:])]
    return []


def _nth(pattern: Pattern, text: str, start: int) -> list[int]:
    """Which match of the pattern starts its capture at `start`: its index from the front (when small) and -1
    when it is the last — both when it is the only one."""
    starts = [m.start(1) for m in pattern.regex.finditer(text)]
    if start not in starts:
        return []
    k = starts.index(start)
    return ([k] if k <= 3 else []) + ([-1] if k == len(starts) - 1 else [])


def item_patterns(text: str, items: list[Any]) -> set[tuple[Pattern, str]]:
    """Patterns whose every match, mapped, could be a list item: read off the first item's occurrences."""
    out: set[tuple[Pattern, str]] = set()
    for i, j, map_name in occurrences(text, items[0]):
        out.update((pattern, map_name) for pattern in patterns_at(text, i, j))
    return out


def line_patterns(texts: list[str]) -> set[Pattern]:
    """Patterns for counting: each line's leading shape (bullet, number, `Key:`), bulleted lines whatever the
    bullet, non-blank lines, numbers after punctuation (`#123`) or before a multiplier or punctuation (`2 x`,
    `3)`), and coded tokens (`SKU1234`)."""
    out: set[Pattern] = {Pattern(cls="line", line=True), Pattern(cls="bullet", line=True)}
    for text in texts:
        for m in _LEAD.finditer(text):
            lead = m.group(1) or ""
            if not lead.strip():
                continue
            indent = m.group(0)[: len(m.group(0)) - len(lead)]
            if lead[0].isdigit():
                out.add(Pattern(cls="int", right=lead.strip().lstrip("0123456789")[:1], line=True))
            else:
                out.add(Pattern(left=lead, cls="rest", line=True))
                out.add(Pattern(left=lead.strip(), cls="rest", line=True))
                out.add(Pattern(left=indent + lead.strip(), cls="rest", line=True, strict=True))
        for m in re.finditer(r"([^\w\s]{1,2})([0-9]+)", text):
            out.add(Pattern(left=m.group(1), cls="int"))
        for m in re.finditer(r"(?<![\w.,])[0-9]+( ?[^\w\s]| ?x\b| ?[*×])", text):  # `2 x Lamp`, `3x`, `4)`
            out.add(Pattern(cls="int", right=m.group(1)))
        for m in re.finditer(r"\b([A-Za-z]{2,5}[-#]?)[0-9]+\b", text):  # codes: SKU1234, ORD-5
            out.add(Pattern(left=m.group(1), cls="int", keep=True))
    return out


def common_lines(texts: list[str], share: float = 0.8) -> list[str]:
    """Short lines (stripped) that most texts contain: section headers that can bound a region."""
    counts: dict[str, int] = {}
    for text in texts:
        for line in {ln.strip() for ln in text.splitlines()}:
            if 0 < len(line) <= 40:
                counts[line] = counts.get(line, 0) + 1
    need = max(2, int(share * len(texts)))
    return sorted(line for line, n in counts.items() if n >= need)


def regions(texts: list[str]) -> list[Region]:
    """The whole text, and regions after / between recurring header lines (or up to a blank line)."""
    headers = common_lines(texts)[:12]
    out = [Region()]
    for h in headers:
        out.append(Region(start=h))
        out.append(Region(start=h, end="\n\n"))
        out += [Region(start=h, end=other) for other in headers if other != h]
    return out


def list_regions(text: str, items: list[Any]) -> set[Region]:
    """Regions that could hold a delimited list of `items`: from a left context of the first item to the end of
    its line, the punctuation after the last item, or the end of the text."""
    bounds = list_bounds(text, items)
    return regions_around(text, *bounds) if bounds else set()


def list_bounds(text: str, items: list[Any]) -> tuple[int, int] | None:
    """Where a list's items are written: from its first item's start to its last item's end."""
    first, last = occurrences(text, items[0]), occurrences(text, items[-1])
    if not first or not last:
        return None
    i = first[0][0]
    j = next((e for s, e, _ in last if s >= i), None)
    return (i, j) if j is not None else None


def regions_around(text: str, i: int, j: int) -> set[Region]:
    """Regions that hold text[i:j]: a left context of i to the end of its line, the punctuation or words after j,
    or the end of the text; the first such piece, and every one."""
    ends = {"\n", ""} | ({text[j]} if j < len(text) and text[j] in ".;)!?" else set())
    ends |= {r for r in rights(text, j) if r.strip() and len(r) <= 6}  # ` to our office`, ` - can you`
    starts = [left for left, line in lefts(text, i) if left.strip() and not line]
    return {Region(start=left, end=end) for left in starts for end in ends} | {
        Region(start=left, end=end, each=True) for left in starts for end in ends if end
    }


_GLUE_TAIL = re.compile("(?:" + GLUE + ")$")
RUN_CLASSES = ("int", "number", "word", "token", "email")
"""Item classes a list after a keyword is read with (a run region's pattern)."""


def run_regions(text: str, pattern: Pattern, items: list[Any]) -> set[Region]:
    """Run regions for a list that follows a keyword (`Closes: #1, #2`): the literals right before the match
    that gives the first item, less the list glue they end in (`Closes: #` → `Closes:`), each also in any case."""
    if pattern.cls not in RUN_CLASSES or pattern.right or pattern.pre or pattern.line:
        return set()
    starts = {m.start(1): m.start() for m in pattern.regex.finditer(text)}
    at = next((starts[i] for i, _, _ in occurrences(text, items[0]) if i in starts), None)
    if at is None:
        return set()
    keys = {_GLUE_TAIL.sub("", left) for left, line in lefts(text, at) if not line}
    keys.discard("")
    return {Region(start=k, run=True) for k in keys} | {
        Region(start=k, run=True, fold=True) for k in keys if k.lower() != k.upper()
    }


_KEY = re.compile(r"^[ \t]*([^\n:]{1,30}:[ \t]*)", re.M)


def key_regions(texts: list[str]) -> set[Region]:
    """`Key: value` lines and recurring headers: where a delimited list to count may be."""
    out = {
        Region(start=m.group(1).lstrip(), end=end) for text in texts for m in _KEY.finditer(text) for end in ("\n", ".")
    }
    return out | {r for r in regions(texts) if r.start}
