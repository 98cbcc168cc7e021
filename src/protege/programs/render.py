"""The Python rendering of a task's field programs: `scripts/fields.py` in the task's skill, for reviewers.

It is a plain module (standard library only) a person can read and run: one function per field, each trying its
programs in order, and `solve(data)` giving every field that applied. protege never executes it — it serves
through its own interpreter — but a test checks that the two agree on every trace.
"""

from __future__ import annotations

import inspect

from protege.programs import dates
from protege.programs.interpret import EMPTY as _EMPTY
from protege.programs.interpret import NUMBER_WORDS, SCALED
from protege.programs.language import GLUE, SEPARATORS, Program
from protege.programs.verify import FieldProgram, ProgramSet, digits, fewest_digits, path_of

HELPERS = '''import re
from typing import Any  # the annotation of digits(), copied below

SEPARATORS = SEPARATORS_REGEX  # what separates the items of a delimited list
GLUE = GLUE_REGEX  # what may stand between the items of a list after a keyword
NUMBER_WORDS = NUMBER_WORDS_TUPLE  # the int map reads these too
SCALED = re.compile(SCALED_REGEX, re.IGNORECASE)  # `two dozen` is not 2: a number scaled by the next word

class REFUSED:
    """A marker no field value can be: the program does not apply to this input."""


def _source(data, path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data if isinstance(data, str) else None


def _piece(text, at, start, end):
    i = text.find(start, at) if start else at
    if i < 0:
        return None, len(text)
    i += len(start)
    if not end:
        return text[i:], len(text) + 1
    j = text.find(end, i)
    return (None, len(text)) if j < 0 else (text[i:j], max(j, i + 1))


def _region(text, start, end, each):
    if not each:
        return _piece(text, 0, start, end)[0]
    pieces, at = [], 0
    while True:
        piece, at = _piece(text, at, start, end)
        if piece is None:
            return "\\n".join(pieces) if pieces else None
        pieces.append(piece)


def _run(text, start, fold, regex):
    item, glue, items = re.compile(regex), re.compile(GLUE), []
    for found in re.finditer(re.escape(start), text, re.IGNORECASE if fold else 0):
        at = found.end()
        while True:
            match = item.match(text, glue.match(text, at).end())
            if match is None or match.end() == match.start():
                break
            items.append(match.group(0))
            at = match.end()
    return "\\n".join(items) if items else None


def _map(name, text, ref=None):
    t = text.strip()
    if name == "id":
        return text
    if name == "strip":
        return t
    if name in ("lower", "upper"):
        return t.lower() if name == "lower" else t.upper()
    if name == "squash":
        return re.sub(r"\\s+", " ", text).strip()
    if name == "int":
        if re.fullmatch(r"-?[0-9]+", t):
            return int(t)
        return NUMBER_WORDS.index(t.lower()) if t.lower() in NUMBER_WORDS else REFUSED
    if name == "date":
        return written_date(t, ref) or REFUSED
    return float(t.replace(",", ".")) if re.fullmatch(r"-?[0-9]+(?:[.,][0-9]+)?", t) else REFUSED


def _number(map_name, match, text, ref=None):
    if map_name in ("int", "float") and SCALED.match(text, match.end(1)):
        return REFUSED
    return _map(map_name, match.group(1), ref)


def _span(text, regex, nth, map_name, empty_null, absent_null, prefix="", ref=None, sole=False):
    matches = list(re.finditer(regex, text))
    if sole and len(matches) > 1:
        return REFUSED
    if not -len(matches) <= nth < len(matches):
        return None if absent_null else REFUSED
    if empty_null and not matches[nth].group(1).strip():
        return None
    value = _number(map_name, matches[nth], text, ref)
    return prefix + value if prefix else value


def _ordered(items, unique, ascending):
    if unique:
        items = list(dict.fromkeys(items))
    if ascending:
        try:
            items = sorted(items)
        except TypeError:
            return REFUSED
    return items


def _all(text, regex, map_name, empty_refuses, unique=False, ascending=False, ref=None):
    items = [_number(map_name, m, text, ref) for m in re.finditer(regex, text)]
    if REFUSED in items or (not items and empty_refuses):
        return REFUSED
    return _ordered(items, unique, ascending)


def _split(text, map_name, empty_refuses, count, unique=False, ascending=False, ref=None):
    parts = [p.strip() for p in re.split(SEPARATORS, text.strip())]
    items = [_map(map_name, p, ref) for p in parts if p]
    if REFUSED in items or (not items and empty_refuses):
        return REFUSED
    return len(items) if count else _ordered(items, unique, ascending)


def _count(text, regex, empty_refuses, offset, unique=False):
    matches = [m.group(1) for m in re.finditer(regex, text)]
    n = len(set(matches)) if unique else len(matches)
    return REFUSED if n == 0 and empty_refuses or n + offset < 0 else n + offset
'''


def render(programs: ProgramSet) -> str:
    """The module text for a task's program set (promoted fields only; the others are listed, unserved)."""
    served = programs.served
    head = [
        f'"""Field programs of task {programs.task!r}, induced by protege from {programs.traces} traces.',
        "",
        "Each field's function tries its programs in order and returns the first value that applies, or REFUSED",
        "(the field is then left to the next tier). Fields without a verified program:",
        f"{', '.join(n for n in programs.fields if n not in served) or 'none'}.",
        '"""',
        "",
    ]
    body = [_field_function(fp) for fp in served.values()]
    solve = [
        "def solve(data):",
        '    """Every field whose program applies to `data` (the task input as a dict)."""',
        "    out = {}",
    ]
    for name in served:
        solve += [f"    value = field_{name}(data)", "    if value is not REFUSED:", f"        out[{name!r}] = value"]
    solve.append("    return out")
    helpers = (
        HELPERS.replace("SEPARATORS_REGEX", repr(SEPARATORS))
        .replace("GLUE_REGEX", repr(GLUE))
        .replace("NUMBER_WORDS_TUPLE", repr(NUMBER_WORDS))
        .replace("SCALED_REGEX", repr(SCALED.pattern))
    )
    helpers += "\n\n# A value far larger or smaller than the traces' refuses (protege.programs.verify, copied)\n"
    helpers += inspect.getsource(digits) + "\n\n" + inspect.getsource(fewest_digits)
    if any(p.map == "date" for fp in served.values() for p in fp.programs):
        helpers += "\n\n# Written dates (protege.programs.dates, copied)\n" + _dates_source()
    return "\n".join(head) + helpers + "\n\n" + "\n\n".join(body + ["\n".join(solve)]) + "\n"


def _dates_source() -> str:
    """dates.py without its docstring and future import: it sits inside the rendered module."""
    source = inspect.getsource(dates)
    return source[source.index("import datetime as _dt") :]


def _field_function(fp: FieldProgram) -> str:
    lines = [f"def field_{fp.field}(data):", f'    """{_doc(fp)}"""']
    for program in fp.programs:
        lines.append(f"    # {program.describe()}")
        anchors = fp.anchors.get(program.source_path, [])
        if anchors:
            lines.append(f"    # applies only to texts containing {', '.join(map(repr, anchors))} (as the traces did)")
        lines += ["    " + line for line in _program_lines(program, anchors, fp)]
    lines.append("    return REFUSED")
    return "\n".join(lines) + "\n"


def _doc(fp: FieldProgram) -> str:
    acc = f"{fp.accuracy:.1%}" if fp.accuracy is not None else "n/a"
    return f"{fp.field}: held-out accuracy {acc} on {fp.right + fp.wrong} answered, {fp.refused} refused."


def _program_lines(p: Program, anchors: list[str], fp: FieldProgram) -> list[str]:
    if p.op == "const":
        return _const_lines(p, fp)
    regex = p.pattern.regex.pattern if p.pattern is not None else None
    order = f", {p.unique}, {p.ascending}" if p.unique or p.ascending else ""
    ref = ", ref=reference_date(data)" if p.map == "date" else ""  # the input's own date dates a yearless one
    call = {
        "span": f"_span(region, {regex!r}, {p.occurrence}, {p.map!r}, {p.empty_null}, {p.absent_null}"
        + (f", {p.prefix!r}" if p.prefix else "")
        + f"{ref}{', sole=True' if p.sole else ''})",
        "all": f"_all(region, {regex!r}, {p.map!r}, {p.empty_refuses}{order}{ref})",
        "count": f"_count(region, {regex!r}, {p.empty_refuses}, {p.offset}{', True' if p.unique else ''})",
        "has": f"(re.search({regex!r}, region) is {'' if p.negate else 'not '}None)",
        "split": f"_split(region, {p.map!r}, {p.empty_refuses}, False{order}{ref})",
        "nsplit": f"_split(region, {p.map!r}, {p.empty_refuses}, True)",
    }[p.op]
    return [
        f"text = _source(data, {p.source!r})",
        f"text = text if text is not None and all(a in text for a in {anchors!r}) else None",
        *([f"text = text if text is not None and len(text) <= {fp.max_chars} else None"] if fp.max_chars else []),
        f"region = {_region_call(p)} if text is not None else None",
        *(
            ["if region is None and text is not None:", f"    return {_EMPTY[p.op]!r}"]
            if p.absent_null and p.op != "span"
            else []
        ),
        "if region is not None:",
        f"    value = {call}",
        f"    if value is not REFUSED{_magnitude_check(fp)}:",
        "        return value",
    ]


def _const_lines(p: Program, fp: FieldProgram) -> list[str]:
    """A constant, where every text the field's guard names is like the training texts (`FieldProgram.guards`)."""
    lines = [f"fits = {bool(fp.anchors)}  # a constant with no text to guard it is not served"]
    for key, anchors in fp.anchors.items():
        if not anchors and not fp.max_chars:
            continue
        having = f" containing {', '.join(map(repr, anchors))}" if anchors else ""
        limit = f" of at most {fp.max_chars} characters" if fp.max_chars else ""
        lines += [
            f"# applies only where {key} is a text{having}{limit}, as in the traces",
            f"text = _source(data, {path_of(key)!r})",
            f"fits = fits and text is not None and all(a in text for a in {anchors!r})",
            *([f"fits = fits and len(text) <= {fp.max_chars}"] if fp.max_chars else []),
        ]
    return [*lines, "if fits:", f"    return {p.value!r}"]


def _magnitude_check(fp: FieldProgram) -> str:
    """The rendered form of `fits_digits`: the value's magnitude within what the traces showed."""
    check = f" and digits(value) <= {fp.max_digits}" if fp.max_digits else ""
    if fp.min_digits:
        check += f" and (fewest_digits(value) or {fp.min_digits}) >= {fp.min_digits}"
    return check


def _region_call(p: Program) -> str:
    r = p.region
    if r.run:
        return f"_run(text, {r.start!r}, {r.fold}, {p.pattern.regex.pattern!r})"  # type: ignore[union-attr]
    return f"_region(text, {r.start!r}, {r.end!r}, {r.each})"


def markdown_table(programs: ProgramSet) -> str:
    """The per-field record as a markdown table (the TUI's skill preview)."""

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    lines = [
        f"### Field programs: {len(programs.served)} of {len(programs.fields)} fields served",
        "",
        f"Induced on {programs.train} traces, verified on {programs.heldout} held out ({programs.induce_s:.2f} s).",
        "",
        "| field | program | served | held-out accuracy | refused |",
        "|---|---|---|---|---|",
    ]
    for fp in programs.fields.values():
        program = (fp.describe() if fp.programs else "none").replace("|", "\\|")
        lines.append(
            f"| {fp.field} | {program} | {'yes' if fp.promoted else 'no'} | {pct(fp.accuracy)} | "
            f"{pct(fp.refusal_rate)} |"
        )
    return "\n".join(lines) + "\n"
