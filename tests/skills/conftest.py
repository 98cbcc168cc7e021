"""Fixtures for the skills tests: a real store (SQLite file, and PostgreSQL when reachable), its library, skills."""

from __future__ import annotations

import os
import uuid

import pytest

from protege.skills import Skill, SkillLibrary
from protege.store import Store

PG_ADMIN = os.environ.get("PROTEGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/s.db")
        yield s
        s.close()
        return
    yield from _postgres_store()


def _postgres_store():
    """A throwaway database on the local PostgreSQL server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"protege_skills_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    s = Store(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield s
    finally:
        s.close()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def lib(store):
    return SkillLibrary(store)


@pytest.fixture
def make_skill():
    def make(name: str = "extract-order", **fields) -> Skill:
        fields.setdefault("description", f"Does {name}. Use when asked to {name.replace('-', ' ')}.")
        fields.setdefault("body", f"# {name}\n\n1. Read the input.\n2. Answer with JSON.\n")
        return Skill(name=name, **fields).validate()

    return make
