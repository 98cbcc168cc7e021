"""Full-text search over skills: SQLite FTS5 (bm25) or PostgreSQL full text (ts_rank); see migration 0001.

User text never reaches the query parser as syntax: it is cut into word terms (letters and digits), each quoted
(FTS5) or passed through a parser that only sees words (tsquery), and the terms are OR-ed so ranking — not a
strict AND — decides what fits best.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnClause, Float, bindparam, column, func, literal_column, select, table, text
from sqlalchemy.sql import Select

from protege.store.models import SkillRow

MAX_TERMS = 32
_WORD = re.compile(r"[^\W_]+")

# bm25 column weights, in the FTS5 table's column order: task_name, name, description, text
_BM25 = "bm25(skill_fts, 2.0, 2.0, 3.0, 1.0)"
PG_VECTOR = "skill.search_vector"  # the generated tsvector column of migration 0001 (GIN-indexed)
PG_WEIGHTS = "{0.1, 0.2, 0.4, 0.6}"  # ts_rank weights of D (text), C (unused), B (description), A (names)


# English function words: they match nearly every skill and only add noise (PostgreSQL drops them too)
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its my no not of on or "
    "our so such than that the their then there these they this to was we were what when where which who why "
    "will with you your".split()
)


def query_terms(query: str) -> list[str]:
    """The distinct lower-case word terms of free text (stopwords dropped), in order, at most MAX_TERMS."""
    words = (m.lower() for m in _WORD.findall(query or ""))
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS))[:MAX_TERMS]


def search_statement(dialect: str, terms: list[str]) -> Select[Any]:
    """SELECT (SkillRow, score) matching any term, best first; the caller adds filters and a limit."""
    if dialect == "sqlite":
        return _sqlite(terms)
    if dialect == "postgresql":
        return _postgres(terms)
    raise NotImplementedError(f"skill search is not implemented for the {dialect!r} database")


def _sqlite(terms: list[str]) -> Select[Any]:
    fts = table("skill_fts", column("rowid"))
    match = " OR ".join(f'"{t}"' for t in terms)  # terms hold no quotes: each is a plain FTS5 string
    rank = literal_column(_BM25, Float)
    return (
        select(SkillRow, (-rank).label("score"))
        .join(fts, fts.c.rowid == SkillRow.id)
        .where(text("skill_fts MATCH :match").bindparams(match=match))
        .order_by(rank)
    )


def _postgres(terms: list[str]) -> Select[Any]:
    """One ts_rank of the OR query per matching skill: PostgreSQL averages the per-term ranks, so covering more
    of the query's words ranks higher. Unlike bm25 it has no corpus statistics (no idf); computing document
    frequencies per term costs a pass over the (toasted) vectors per term, far too slow for what it adds.

    to_tsquery sees only letter/digit words joined by '|': no operator or quote from the user survives.
    """
    vector: ColumnClause[Any] = literal_column(PG_VECTOR)
    tsquery = func.to_tsquery(literal_column("'english'"), bindparam("tsq", " | ".join(terms)))
    # weights for D, C, B, A: name hits (A) count, but not so much that one word in a name beats the rest
    rank = func.ts_rank(literal_column(f"'{PG_WEIGHTS}'::float4[]"), vector, tsquery, 1)
    return select(SkillRow, rank.label("score")).where(vector.op("@@")(tsquery)).order_by(rank.desc())
