"""Secrets: API keys never reach the store, logs, error messages or exports; secrets and personal data planted in
task inputs, tool results and answers are redacted from every dataset file."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from protege import AllTiersFailed, Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.base import Message, ModelRequest, ModelResponse, ToolCall
from protege.agents.models.openai import OpenAIModel
from protege.distill import export
from protege.distill.dataset import build_dataset
from protege.errors import ModelError
from protege.skills import Skill
from protege.testing import FakeProvider

from .common import BAD, GOOD, OPUS, register_triage, store_text

ANTHROPIC_KEY = "sk-ant-test-SECRET123"
OPENAI_KEY = "sk-proj-test-SECRET456"
WRONG_KEY = "sk-ant-wrong-SECRET789"
KEYS = (ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY)
LOGGERS = ("", "protege", "anthropic", "openai", "httpx", "httpcore")


def leaks(text: str) -> list[str]:
    return [k for k in KEYS if k in text or k.removeprefix("sk-") in text]


def test_api_keys_never_reach_store_logs_errors_or_exports(tmp_path, caplog, capfd):
    """Real SDK calls (success, escalation, faults whose error bodies echo the key, a rejected wrong key) with DEBUG
    logging everywhere: no key in any table, log record, printed output, error message, error body or export."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    errors: list[BaseException] = []
    with (
        FakeProvider(api_key=ANTHROPIC_KEY, handler=lambda p, b: "prose") as claude,
        FakeProvider(api_key=OPENAI_KEY, handler=lambda p, b: "prose") as gpt,
    ):
        teacher = AnthropicModel(
            "claude-opus-4-5", api_key=ANTHROPIC_KEY, base_url=claude.anthropic_base_url, max_retries=1
        )
        replay = OpenAIModel("gpt-4o-mini", api_key=OPENAI_KEY, base_url=gpt.openai_base_url, max_retries=1)
        app = Protege(
            db=f"sqlite:///{tmp_path}/keys.db", teacher=teacher, replay=replay, project_dir=tmp_path / ".protege"
        )
        register_triage(app, policy=Policy(shadow_rate=0))  # no background teacher call may take a scripted reply
        claude.add_final(GOOD)
        app.run("triage", {"ticket": {"subject": "first call: the teacher solves it"}})
        app.wait()
        mine = app.skills.add("triage", Skill(name="triage", description="Route tickets.", body="# Triage\n"))
        app.approve_skill("triage", version=mine.version)  # named: the written draft is still awaiting review

        gpt.add_final(GOOD)  # replay serves
        assert app.run("triage", {"ticket": {"subject": "refund"}}).tier == "replay"
        gpt.add_fault(400, message=f"malformed request sent with key {OPENAI_KEY}")  # echoed key, not retried
        claude.add_final(GOOD)
        assert app.run("triage", {"ticket": {"subject": "refund"}}).tier == "teacher"
        app.wait()
        gpt.add_final(BAD)  # schema-invalid replay, then a teacher whose 429 bodies echo the key
        for _ in range(2):
            claude.add_fault(429, retry_after=0, message=f"rate limit for key {ANTHROPIC_KEY}")
        with pytest.raises(AllTiersFailed) as caught:
            app.run("triage", {"ticket": {"subject": "refund"}})
        errors.append(caught.value)
        app.wait()

        wrong = AnthropicModel("claude-opus-4-5", api_key=WRONG_KEY, base_url=claude.anthropic_base_url)
        with pytest.raises(ModelError) as bad_key:
            asyncio.run(wrong.request(ModelRequest(messages=[Message(role="user", content="hi")])))
        errors.append(bad_key.value)
        assert bad_key.value.status == 401

        exported = app.export_skills(tmp_path / "skills")
        built = build_dataset(app.store, "triage", instructions="Route a support ticket.", out_dir=tmp_path / "ds")
        recorded = json.dumps([r.body for r in claude.requests + gpt.requests])
        dump = store_text(app.store)
        app.close()

    attempts_text = json.dumps([a.model_dump() for a in caught.value.attempts])
    error_text = "\n".join(f"{e!s}\n{e!r}\n{json.dumps(getattr(e, 'body', None), default=str)}" for e in errors)
    files_text = "\n".join(
        p.read_text() for root in (*exported, built.path) for p in Path(root).rglob("*") if p.is_file()
    )
    out, err = capfd.readouterr()
    assert "RateLimited" in attempts_text and "***" in dump  # the echoed key was seen, and scrubbed
    assert any(
        r.name.startswith(("anthropic", "openai", "httpx")) and r.levelno == logging.DEBUG for r in caplog.records
    )  # SDK debug logging was on and captured
    print(
        f"keys checked in {len(dump):,} chars of store, {len(caplog.records)} log records, "
        f"{len(files_text):,} chars of exports"
    )
    for where, text in {
        "store": dump,
        "logs": caplog.text,
        "stdout/stderr": out + err,
        "errors": error_text,
        "attempts": attempts_text,
        "exports": files_text,
        "fake's recorded requests": recorded,
    }.items():
        assert not leaks(text), f"API key found in {where}"


# -- planted secrets and personal data ------------------------------------------------------------------------------

SECRETS = {
    "anthropic key": "sk-ant-api03-Zq8Xw2Lm4Np6Rt8Vx0Bz2Dc4Fg6Hj8Kl0Mn2",
    "openai key": "sk-proj-Ab3De6Gh9Jk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6",
    "aws key id": "AKIAZ7Q4EXAMPLEKEY99",
    "github token": "ghp_4f9QbT2mXw7Lk1Rz8Vn3Hs6Jd0Pc5Ya2Ge7K",
    "private key": "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0",
    "url password": "hunter2pass",
    "password field": "Tr0ub4dor-and-3",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}
PII = {
    "email": "jane.doe@example.com",
    "phone": "+1 415-555-0132",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
}


class Note(BaseModel):
    text: str


class Extracted(BaseModel):
    summary: str
    contact: str


def planted_note(i: int) -> str:
    return (
        f"Case {i}: customer {PII['email']} (phone {PII['phone']}, card {PII['card']}, IBAN {PII['iban']}) "
        f"pasted their key {SECRETS['anthropic key']} and {SECRETS['openai key']}; AWS {SECRETS['aws key id']}; "
        f"db postgres://admin:{SECRETS['url password']}@db.internal:5432/prod; "
        f"password={SECRETS['password field']}; session {SECRETS['jwt']}\n"
        f"-----BEGIN RSA PRIVATE KEY-----\n{SECRETS['private key']}\n-----END RSA PRIVATE KEY-----"
    )


def lookup_account(email: str) -> dict:
    """Look up the customer's account."""
    return {"plan": "pro", "owner": email, "deploy_token": SECRETS["github token"]}


def agent(req):
    """Calls the tool once, then answers with a summary that repeats the note (secrets included)."""
    if req.messages[-1].role != "tool":
        return ModelResponse(tool_calls=[ToolCall(id="c1", name="lookup_account", arguments={"email": PII["email"]})])
    return {"summary": req.task_input["note"]["text"][:400] + " " + req.messages[-1].content, "contact": PII["email"]}


@pytest.fixture(scope="module")
def planted_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    app = Protege(db=f"sqlite:///{tmp}/planted.db", teacher=FunctionModel(agent, price_as=OPUS), project_dir=tmp)

    @app.task(tools=[lookup_account])
    def extract(note: Note) -> Extracted:
        """Summarise the support note and give the customer's contact."""

    for i in range(12):
        app.run("extract", {"note": {"text": planted_note(i)}})
    app.wait()
    yield app, tmp
    app.close()


@pytest.mark.parametrize("mode", ["secrets", "pii"])
def test_planted_secrets_are_redacted_from_every_dataset_file(planted_app, mode):
    """Secrets in inputs, tool results and answers are in no dataset or export file in either mode; personal data
    goes too with redact="pii" and stays with the default "secrets" (tasks may exist to extract it)."""
    app, tmp = planted_app
    assert SECRETS["github token"] in store_text(app.store)  # the store keeps the truth; files get redacted copies
    built = build_dataset(
        app.store,
        "extract",
        instructions=app.tasks["extract"].spec.instructions,
        out_dir=tmp / mode,
        redact=mode,
        tools=app.tasks["extract"].runtime.tools.specs,
    )
    assert built.counts["train"] + built.counts["eval"] == 12 and built.counts["tool_rows"] == 12
    export.export_dataset(built.row, tmp / f"{mode}-openai", fmt="openai")
    export.export_dataset(built.row, tmp / f"{mode}-trl", fmt="trl")
    files = [p for d in (built.path, tmp / f"{mode}-openai", tmp / f"{mode}-trl") for p in d.rglob("*") if p.is_file()]
    text = "\n".join(p.read_text() for p in files)
    assert len(files) >= 9 and "[REDACTED:" in text
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked into a {mode} dataset"
    for name, value in PII.items():
        assert (value in text) == (mode == "secrets"), f"{name}: redact={mode!r} kept={value in text}"
