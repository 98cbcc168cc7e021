"""Induction: for each output field, the simplest program consistent with every training trace.

Candidates are read off examples (candidates.py), in rounds: the first example with a value gives candidates,
each is run on every training example and dropped once it disagrees with more than `NOISE` of them (a refusal is
allowed; a few disagreements are the teacher's slips, which a right program must survive), then the first
example no surviving candidate explains gives the next round's candidates — so a workload
that mixes formats (forms and prose) gets the program for the format that has one. The winner covers the most
training examples, then is the smallest; it must cover at least `MIN_COVERAGE` of them. Where one program
cannot cover a mixed workload, up to `MAX_ALTERNATIVES` partial ones are chained (each further one covering at
least `ALT_COVERAGE`: one format among several): the first that applies answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from protege.programs import candidates as cand
from protege.programs.dates import reference_date
from protege.programs.interpret import REFUSED, match_count, ordered, run_on_text, source_text, span_region
from protege.programs.language import Pattern, Program

MIN_COVERAGE = 0.1  # share of training examples the first (or only) program must answer right
ALT_COVERAGE = 0.04  # ... and each further one of a chain (a format of a mixed workload: `order no. 123`)
MIN_RIGHT = 5
NOISE = 0.02  # share of training traces a program may disagree with (the teacher's own slips)
PENALTY = 3  # a disagreement costs this many answered examples when programs are ranked
MAX_ALTERNATIVES = 4  # partial programs tried in order, for workloads that mix formats
MAX_CLEAN_ALTERNATIVES = 6  # ... and further ones that no training trace disagrees with (a rarer format's program)
ROUNDS = 10  # examples candidates are read off, per field (6 missed one of the order dates' formats)
PROBE_TEXTS = 20  # texts that line shapes and section headers are read from
MAX_OFFSET = 2  # a count may be off its matches by this much (header rows)
MAX_LITERALS = 400  # literals a yes/no field tries from one example


@dataclass
class Fit:
    """A candidate that was (almost) never wrong on the training examples, and what it covered."""

    program: Program
    right: int
    refused: int
    n: int
    covered: frozenset[int] = field(default_factory=frozenset)
    wrong: int = 0

    @property
    def coverage(self) -> float:
        return self.right / self.n if self.n else 0.0


class Corpus:
    """Training examples with each input's string leaves looked up once."""

    def __init__(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]):
        self.inputs, self.outputs, self.n = inputs, outputs, len(inputs)
        self.max_wrong = int(NOISE * self.n)  # a teacher's slips: a right program may disagree with a few traces
        self.picks: dict[Program, bool] = {}  # `_picks_among`, per program
        self.sources = sorted({p for data in inputs[:PROBE_TEXTS] for p in string_leaves(data)})
        self.texts = {p: [source_text(data, p) for data in inputs] for p in self.sources}
        self._lacks: dict[tuple[tuple[str, ...], str], frozenset[int]] = {}
        self._references: list[date | None] | None = None

    def reference(self, k: int) -> date | None:
        """Example k's own date (for the `date` map), looked up once for all examples."""
        if self._references is None:
            self._references = [reference_date(data) for data in self.inputs]
        return self._references[k]

    def values(self, name: str) -> list[Any]:
        return [out.get(name) for out in self.outputs]

    def lacking(self, program: Program) -> frozenset[int]:
        """Examples a span program certainly finds nothing in: their text lacks one of its literals."""
        if program.op != "span" or program.pattern is None or program.region.start or program.region.end:
            return frozenset()  # (a missing region refuses even where a missing match would mean null)
        p = program.pattern
        out: frozenset[int] = frozenset()
        for literal in (p.left, p.right, p.lead):
            if literal:
                out = out | self._lacking(program.source, literal)
        return out

    def _lacking(self, source: tuple[str, ...], literal: str) -> frozenset[int]:
        key = (source, literal)
        hit = self._lacks.get(key)
        if hit is None:
            texts = self.texts[source]
            hit = self._lacks[key] = frozenset(k for k, t in enumerate(texts) if t is None or literal not in t)
        return hit


def string_leaves(data: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    """Paths of the string leaves of a nested input dict (lists are not descended: no stable path)."""
    if isinstance(data, str):
        yield path
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str):
                yield from string_leaves(value, (*path, key))


def same(value: Any, expected: Any) -> bool:
    """Equality after the field's JSON type: 3 is not "3", True is not 1, lists compare item by item."""
    if isinstance(value, list) and isinstance(expected, list):
        return len(value) == len(expected) and all(same(v, e) for v, e in zip(value, expected))
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return value == expected
    return type(value) is type(expected) and value == expected


def evaluate(program: Program, corpus: Corpus, name: str, *, first: int | None = None, need: float = 0) -> Fit | None:
    """Run on every training example; None once it is wrong on more than `corpus.max_wrong` of them, or can no
    longer answer `need` (counting refusals where the trace said none: a null / [] / 0 variant may still get
    those). `first`: the example the program was read off, tried before the rest (most candidates fail there)."""
    if first is not None and not same(_value(program, corpus, name, first), corpus.outputs[first].get(name)):
        return None
    right, refused, hopeful, wrong, covered = 0, 0, 0, 0, []
    lacking = corpus.lacking(program)
    nothing = None if program.absent_null else REFUSED  # what the span gives where its literal is missing
    for k, out in enumerate(corpus.outputs):
        expected = out.get(name)
        value = nothing if k in lacking else _value(program, corpus, name, k)
        if value is REFUSED:
            refused += 1
            hopeful += expected in (None, [], 0)
            if right + hopeful + (corpus.n - k - 1) < need:
                return None
        elif same(value, expected):
            right += 1
            covered.append(k)
        else:
            wrong += 1
            if wrong > corpus.max_wrong:
                return None
    return Fit(program, right, refused, corpus.n, frozenset(covered), wrong)


def _value(program: Program, corpus: Corpus, name: str, k: int) -> Any:
    if program.op == "const":
        return program.value
    text = corpus.texts[program.source][k] if program.source in corpus.texts else None
    if text is None:
        return REFUSED
    return run_on_text(program, text, corpus.reference(k) if program.map == "date" else None)


def field_kind(values: list[Any]) -> str | None:
    """str, int, float or list (of scalars) when every non-null value is one; None otherwise."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        return "bool"
    if all(isinstance(v, str) for v in present):
        return "str"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    if all(
        isinstance(v, list) and all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in v)
        for v in present
    ):
        return "list"
    return None


def induce_field(corpus: Corpus, name: str) -> list[Fit]:
    """The consistent programs chosen for one output field, tried in order (empty: none)."""
    values = corpus.values(name)
    kind = field_kind(values)
    fits: list[Fit] = []
    if values and all(same(v, values[0]) for v in values) and corpus.n >= 2:
        fits.append(Fit(Program("const", value=values[0]), corpus.n, 0, corpus.n, frozenset(range(corpus.n))))
    if kind in ("str", "int", "float"):
        fits += _span_search(corpus, name, values)
    if kind == "int":
        fits += _count_search(corpus, name, values)
    if kind == "list":
        fits += _list_search(corpus, name, values)
    if kind == "bool":
        fits += _has_search(corpus, name, values)
    return _cover([f for f in fits if f.right >= _need(corpus)], _lead_need(corpus), corpus)


def _cover(fits: list[Fit], need: float, corpus: Corpus) -> list[Fit]:
    """Greedy set cover: the fit covering most examples (then one that never picked among several matches, then
    the smallest), then the one covering most of what is left, up to MAX_ALTERNATIVES (a disagreement with a
    trace costs PENALTY answered ones), then up to MAX_CLEAN_ALTERNATIVES that disagree with none. Tried in
    order, the first that applies answers — wrong on training at most where an alternative was."""
    chosen: list[Fit] = []
    left: set[int] = set().union(*(f.covered for f in fits)) if fits else set()
    # the candidates come out of sets, in an order that changes with each process's string hashing: a tie of
    # coverage and size is broken by the program itself, so the same traces always give the same programs
    spelled = {id(f): repr(f.program) for f in fits}
    while fits and left and len(chosen) < MAX_CLEAN_ALTERNATIVES:
        # past MAX_ALTERNATIVES a program must agree with every trace it answers. On the bundled orders this
        # answers 61% of unseen dates instead of 50% and 49% of cities instead of 37%, all right; 6 alternatives
        # with no such rule took city programs that were wrong on 1-2% of unseen calls
        pool = fits if len(chosen) < MAX_ALTERNATIVES else [f for f in fits if not f.wrong]
        if not pool:
            break
        best = min(
            pool,
            key=lambda f: (
                -(len(f.covered & left) - PENALTY * f.wrong),
                _picks_among(f.program, corpus),  # `int before ' pages'` over `first int` (a title's `1984`)
                f.program.size,
                spelled[id(f)],
            ),
        )
        gain = len(best.covered & left)
        if gain < (need if not chosen else MIN_RIGHT):
            break
        chosen.append(best)
        left -= best.covered
    return chosen


def _span_search(corpus: Corpus, name: str, values: list[Any]) -> list[Fit]:
    nullable = any(v is None for v in values)
    seen: set[Program] = set()
    fits: list[Fit] = []
    covered: set[int] = set()
    for _ in range(ROUNDS):
        k = next((i for i, v in enumerate(values) if v is not None and i not in covered), None)
        if k is None:
            break
        covered.add(k)  # even when nothing explains it, move on
        for source in corpus.sources:
            text = corpus.texts[source][k]
            if text is None:
                continue
            for program in cand.span_candidates(source, text, values[k], corpus.reference(k)):
                for variant in _null_variants(program, nullable):
                    if variant in seen:
                        continue
                    seen.add(variant)
                    fit = evaluate(variant, corpus, name, first=k, need=_need(corpus))
                    if fit is not None and fit.right:
                        fits.append(fit)
                        covered |= fit.covered
                        fits += _absent_null(fit, corpus, name, nullable)
    return fits


def _null_variants(program: Program, nullable: bool) -> list[Program]:
    return [program, replace(program, empty_null=True)] if nullable and program.map in ("id", "strip") else [program]


def _absent_null(fit: Fit, corpus: Corpus, name: str, nullable: bool) -> list[Fit]:
    """The same program answering null (a span) or [] / 0 (a list, a count) where it finds nothing, when the
    traces say so there — more often than a teacher's slips would: one empty input answered with placeholders
    must not teach a field that a text without its match means null."""
    if not nullable or not fit.refused:
        return []
    better = evaluate(replace(fit.program, absent_null=True), corpus, name)
    return [better] if better is not None and better.right - fit.right > max(1, corpus.max_wrong) else []


def _count_search(corpus: Corpus, name: str, values: list[Any]) -> list[Fit]:
    never_zero = all(v != 0 for v in values if v is not None)
    fits = []
    for source in corpus.sources:
        probes = [t for t in corpus.texts[source][:PROBE_TEXTS] if t is not None]
        for region in cand.regions(probes):
            for pattern in cand.line_patterns(probes[:8]):
                program = Program("count", source, pattern, region=region, empty_refuses=never_zero)
                fit = evaluate(program, corpus, name, need=_need(corpus))
                if fit is None:
                    fit = _offset(program, corpus, name, values)
                if fit is not None and fit.right:
                    fits.append(fit)
                    fits += _absent_null(fit, corpus, name, region.start != "" and not never_zero)
        for region in cand.key_regions(probes[:8]):
            fit = evaluate(
                Program("nsplit", source, region=region, empty_refuses=never_zero), corpus, name, need=_need(corpus)
            )
            if fit is not None and fit.right:
                fits.append(fit)
                fits += _absent_null(fit, corpus, name, not never_zero)
    return fits


def _offset(program: Program, corpus: Corpus, name: str, values: list[Any]) -> Fit | None:
    """The count off by a constant (a header row, a total line), when the first example says by how much."""
    texts = corpus.texts[program.source]
    k = next((i for i, v in enumerate(values) if v is not None and texts[i] is not None), None)
    text = texts[k] if k is not None else None
    if k is None or text is None:
        return None
    n = run_on_text(program, text)
    if n is REFUSED or not isinstance(n, int) or not 0 < abs(values[k] - n) <= MAX_OFFSET:
        return None
    return evaluate(replace(program, offset=values[k] - n), corpus, name, first=k, need=_need(corpus))


def _has_search(corpus: Corpus, name: str, values: list[Any]) -> list[Fit]:
    """Yes/no fields: whether a token or a short line of the first yes (or no) example occurs."""
    fits = []
    for target, negate in ((True, False), (False, True)):
        k = next((i for i, v in enumerate(values) if v is target), None)
        if k is None:
            continue
        for source in corpus.sources:
            text = corpus.texts[source][k]
            if text is None:
                continue
            literals = {t for t in text.split() if len(t) >= 3} | {
                ln.strip() for ln in text.splitlines() if 3 <= len(ln.strip()) <= 40
            }
            for literal in sorted(literals)[:MAX_LITERALS]:
                fit = evaluate(
                    Program("has", source, Pattern(left=literal, cls="empty"), negate=negate),
                    corpus,
                    name,
                    first=k,
                    need=_need(corpus),
                )
                if fit is not None and fit.right:
                    fits.append(fit)
    return fits


def _counts_of_lists(corpus: Corpus, name: str, list_fields: list[str]) -> list[Fit]:
    """Counts of the delimited list another list field's items are written in (`order for 6 x A, seven B and C`:
    the quantities' list is the items' list), read off a few examples of each list field."""
    values = corpus.values(name)
    never_zero = all(v != 0 for v in values if v is not None)
    seen: set[Program] = set()
    fits = []
    lists = [corpus.values(other) for other in list_fields]
    covered: set[int] = set()
    rounds = 0
    for k in [i for i, v in enumerate(values) if v and any(items[i] for items in lists)]:
        if k in covered:
            continue
        rounds += 1
        if rounds > ROUNDS:
            break
        for source in corpus.sources:
            text = corpus.texts[source][k]
            if text is None:
                continue
            bounds = [b for items in lists if items[k] and (b := cand.list_bounds(text, items[k])) is not None]
            if bounds:  # the span every list field's items cover: `6 x A, seven B` holds quantities and products
                around = cand.regions_around(text, min(b[0] for b in bounds), max(b[1] for b in bounds))
                for region in around:
                    program = Program("nsplit", source, region=region, empty_refuses=never_zero)
                    if program not in seen:
                        seen.add(program)
                        fit = evaluate(program, corpus, name, first=k, need=_need(corpus))
                        if fit is not None and fit.right:
                            fits.append(fit)
                            covered |= fit.covered
    return fits


def _list_search(corpus: Corpus, name: str, values: list[Any]) -> list[Fit]:
    """Lists: a delimited list in a region (`split`), or every match of an item pattern in a region (`all`); in
    rounds, like spans, so each format of a mixed workload gets its generator example."""
    never_empty = all(v for v in values if v is not None)
    need = _need(corpus)
    seen: set[Program] = set()
    fits: list[Fit] = []
    covered: set[int] = set()
    for _ in range(ROUNDS):
        k = next((i for i, v in enumerate(values) if v and i not in covered), None)
        if k is None:
            break
        covered.add(k)
        for candidate in _list_candidates(corpus, k, values[k], never_empty):
            program = _in_order(candidate, corpus, k, values[k])
            if program in seen:
                continue
            seen.add(program)
            fit = evaluate(program, corpus, name, first=k, need=need)
            if fit is not None and fit.right:
                fits.append(fit)
                covered |= fit.covered
                fits += _absent_null(fit, corpus, name, program.region.start != "" and not never_empty)
    return fits


def _in_order(program: Program, corpus: Corpus, k: int, items: list[Any]) -> Program:
    """The candidate with the item order example k shows: as written, each once and/or ascending (the first of
    these that gives example k's list; as written when none does, which then fails there)."""
    text = corpus.texts[program.source][k]
    found = run_on_text(program, text) if text is not None else REFUSED
    if not isinstance(found, list) or same(found, items):
        return program
    for unique, ascending in ((True, False), (False, True), (True, True)):
        if same(ordered(found, unique, ascending), items):
            return replace(program, unique=unique, ascending=ascending)
    return program


def _list_candidates(corpus: Corpus, k: int, items: list[Any], never_empty: bool) -> Iterable[Program]:
    for source in corpus.sources:
        text = corpus.texts[source][k]
        if text is None:
            continue
        probes = [t for t in corpus.texts[source][:PROBE_TEXTS] if t is not None]
        item_map = next((m for _, _, m in cand.occurrences(text, items[0])), "id")
        near = cand.list_regions(text, items)
        for region in near:
            for map_name in {item_map, "strip"} if item_map == "id" else {item_map}:
                yield Program("split", source, region=region, map=map_name, empty_refuses=never_empty)
        for pattern, map_name in cand.item_patterns(text, items):
            for region in [*cand.regions(probes), *near, *cand.run_regions(text, pattern, items)]:
                yield Program("all", source, pattern, region=region, map=map_name, empty_refuses=never_empty)


def _need(corpus: Corpus) -> float:
    """Training examples a program must answer right to be kept (as a further program of a chain, at least)."""
    return max(MIN_RIGHT, ALT_COVERAGE * corpus.n)


def _lead_need(corpus: Corpus) -> float:
    """Training examples the first program of a chain must answer right."""
    return max(MIN_RIGHT, MIN_COVERAGE * corpus.n)


def induce(
    inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], fields: list[str]
) -> tuple[dict[str, list[Fit]], float]:
    """Each field's chosen training fits (empty: no program), and the seconds it took."""
    started = time.perf_counter()
    corpus = Corpus(inputs, outputs)
    found = {name: induce_field(corpus, name) for name in fields}
    lists = [f.program for fits in found.values() for f in fits if f.program.op in ("all", "split")]
    list_fields = [n for n in fields if field_kind(corpus.values(n)) == "list"]
    for name in fields:  # a count is often the length of a list another field extracts, or of the list it is in
        if (lists or list_fields) and field_kind(corpus.values(name)) == "int":
            more = [
                evaluate(replace(p, op="count" if p.op == "all" else "nsplit", map="id", ascending=False), corpus, name)
                for p in lists
            ]
            more += _counts_of_lists(corpus, name, list_fields)
            pool = [f for f in [*found[name], *more] if f is not None]
            found[name] = _cover([f for f in pool if f.right >= _need(corpus)], _lead_need(corpus), corpus)
    found = {name: [_sole(f, corpus) for f in fits] for name, fits in found.items()}
    return found, time.perf_counter() - started


def _sole(fit: Fit, corpus: Corpus) -> Fit:
    """The fit with its span refusing a second match, where its pattern matched at most once in every training
    text: a second candidate is a case no trace showed (a title's `1984` before the page count)."""
    p = fit.program
    if not _first_or_last(p) or _picks_among(p, corpus):
        return fit
    return replace(fit, program=replace(p, sole=True))


def _first_or_last(program: Program) -> bool:
    return program.op == "span" and program.occurrence in (0, -1)


def _picks_among(program: Program, corpus: Corpus) -> bool:
    """Whether a first/last span found several matches in some training text and relied on its position to
    pick one (counted once per program and corpus)."""
    if not _first_or_last(program) or program.source not in corpus.texts:
        return False
    known = corpus.picks.get(program)
    if known is None:
        regex = program.pattern.regex  # type: ignore[union-attr]
        regions = (span_region(program, t) for t in corpus.texts[program.source] if t is not None)
        known = corpus.picks[program] = any(r is not None and match_count(regex, r, 2) > 1 for r in regions)
    return known
