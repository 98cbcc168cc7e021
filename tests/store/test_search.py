"""Full-text search over skills (SQLite FTS5 / PostgreSQL tsvector): ranking, filters, sync, hostile queries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protege.store import SkillRow, Store
from protege.store.search import query_terms

CORPUS = [
    (
        "triage",
        "Route support tickets to a queue and set their priority",
        "Read the ticket subject and body. Billing words go to billing; crashes go to bug. Priority 1 is urgent.",
    ),
    (
        "invoice-extract",
        "Extract totals, currency and dates from invoices",
        "Find the invoice total and currency code. Dates are ISO 8601. Ignore subtotals.",
    ),
    (
        "sentiment",
        "Classify the sentiment of product reviews",
        "Answer positive, negative or neutral. Sarcasm usually means negative.",
    ),
    (
        "ticket-dedup",
        "Find duplicate support tickets",
        "Compare a new ticket with recent tickets; the same customer and subject means a duplicate.",
    ),
    (
        "address-parse",
        "Parse postal addresses into fields",
        "Split street, city, postcode and country. Postcodes differ by country.",
    ),
]
NASTY = [
    '"',
    "'",
    '""',
    "*",
    "-",
    "NEAR(",
    "AND OR NOT",
    "^",
    "a:b",
    "col:foo",
    "(",
    ")",
    "{}",
    "\\",
    "%",
    "_",
    "'; DROP TABLE skill; --",
    'support" OR "1"="1',
    "ticket*",
    "-ticket",
    "ticket & | ! <->",
    ":*",
    "\x00",
    "tickets\ninvoice\t",
    "émoji 🎫 ticket",
    "NEAR(ticket invoice, 2)",
    "skill_fts MATCH x",
]


def _fill(store: Store) -> Store:
    for task, description, text in CORPUS:
        store.add_skill(SkillRow(task_name=task, name=task, description=description, text=text, status="approved"))
    return store


@pytest.fixture
def corpus(store):
    return _fill(store)


def _tasks(hits) -> list[str]:
    return [row.task_name for row, _ in hits]


def test_best_match_ranks_first(corpus):
    """The skill about the query's subject ranks first, scores descend, and unrelated skills are left out."""
    hits = corpus.search_skills("support ticket priority queue")
    assert _tasks(hits)[:2] == ["triage", "ticket-dedup"]
    assert "sentiment" not in _tasks(hits)
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert _tasks(corpus.search_skills("invoice currency"))[0] == "invoice-extract"
    assert _tasks(corpus.search_skills("reviews sarcasm"))[0] == "sentiment"
    assert _tasks(corpus.search_skills("POSTCODES Countries"))[0] == "address-parse"  # case and stemming


def test_filters_limit_and_exclusion(corpus):
    """status, exclude_task and limit narrow the results; empty or word-less queries return nothing."""
    assert len(corpus.search_skills("ticket", limit=1)) == 1
    assert "triage" not in _tasks(corpus.search_skills("ticket", exclude_task="triage"))
    corpus.add_skill(SkillRow(task_name="draft-only", name="d", description="ticket ticket ticket", text="ticket"))
    assert "draft-only" not in _tasks(corpus.search_skills("ticket", limit=10))
    assert "draft-only" in _tasks(corpus.search_skills("ticket", status=None, limit=10))
    assert _tasks(corpus.search_skills("ticket", status="draft")) == ["draft-only"]
    for query in ["", "   ", "!!! ??? ...", "the and of", "--"]:
        assert corpus.search_skills(query) == []
    assert corpus.search_skills("ticket", limit=0) == []


def test_index_follows_updates_and_deletes(corpus):
    """Edits to a skill's text re-index it and deleted skills disappear from results."""
    row = corpus.skill("sentiment")
    corpus.update_skill(row.id, text="Detect spam in comment threads.")
    assert _tasks(corpus.search_skills("spam comment")) == ["sentiment"]
    assert "sentiment" not in _tasks(corpus.search_skills("sarcasm"))
    corpus.update_skill(row.id, status="retired")
    assert corpus.search_skills("spam comment") == []
    with corpus.engine.begin() as conn:
        conn.execute(sa.delete(SkillRow).where(SkillRow.task_name == "triage"))
    assert "triage" not in _tasks(corpus.search_skills("billing urgent priority", status=None))


def test_hostile_queries_never_break_search(corpus):
    """Quotes, operators, SQL and control characters are searched as plain words, never as syntax."""
    for query in NASTY:
        hits = corpus.search_skills(query, limit=10)
        assert all(isinstance(score, float) for _, score in hits), query
        assert not hits or query_terms(query), f"{query!r} has no words, so it must match nothing"
    assert _tasks(corpus.search_skills('support" OR "1"="1'))[0] == "triage"  # still a word search
    assert corpus.skills() and len(corpus.skills()) == len(CORPUS)  # and nothing was dropped


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_any_text_is_a_safe_query(corpus, query):
    """Arbitrary unicode text (hypothesis) never raises from search_skills."""
    corpus.search_skills(query, status=None)


def test_postgres_search_uses_the_gin_index(pg_url):
    """On PostgreSQL the search filters through the GIN index on the generated tsvector column."""
    from protege.store.search import search_statement

    with Store(pg_url) as store:
        _fill(store)
        sql = str(
            search_statement("postgresql", ["ticket"]).compile(store.engine, compile_kwargs={"literal_binds": True})
        )
        with store.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    assert "ix_skill_fts" in plan, plan
