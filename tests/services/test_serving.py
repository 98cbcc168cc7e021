"""A student served by an OpenAI-compatible server, against the fake provider: the request carries the training
prompt, the output schema and a logprobs request; the confidence comes from the logprobs; a server that is down
or answers off-schema escalates; the host is recorded on the student and shown by the CLI."""

from __future__ import annotations

import json
import math
import socket

import pytest
from serving_support import Message, Routing, make_app
from typer.testing import CliRunner

from protege.agents import FunctionModel
from protege.cli import app as cli_app
from protege.errors import UserError
from protege.testing import FakeProvider

INPUT = {"message": {"text": "refund my card"}}


def teacher_answer(req):
    return json.dumps({"queue": "billing"})


@pytest.fixture
def hosted(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # never loaded: the server holds the weights
    app, student_id = make_app(tmp_path, tmp_path, adapter, teacher=FunctionModel(teacher_answer))
    with FakeProvider() as fake:
        yield app, student_id, fake
    app.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_student_tier_calls_the_server_with_its_training_prompt(hosted):
    """Same prompt as training, response_format with the output schema, greedy, logprobs asked; confidence is the
    mean probability of the answer's tokens; its machine time is priced."""
    app, student_id, fake = hosted
    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
    fake.add_final({"queue": "bug"}, logprobs=[-0.01, -0.2, -0.05])
    result = app.run("route", INPUT)
    assert result.tier == "student" and result.output.queue == "bug"
    body = fake.requests[0].body
    assert body["model"] == "route-student" and body["temperature"] == 0 and body["logprobs"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Sort the message into a queue."},
        {"role": "user", "content": '{"message":{"text":"refund my card"}}'},
    ]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema == app.store.task("route").output_schema
    assert result.attempts[0].confidence == pytest.approx(sum(math.exp(v) for v in (-0.01, -0.2, -0.05)) / 3)
    trace = app.traces("route", tier="student")[0]
    assert trace.model == "openai:route-student" and trace.cost_usd > 0


def test_json_object_style_for_llama_cpp_python_servers(hosted):
    """llama-cpp-python's server rejects `json_schema`: the schema goes beside `json_object` instead."""
    app, student_id, fake = hosted
    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url, response_format="json_object")
    fake.add_final({"queue": "bug"})
    assert app.run("route", INPUT).tier == "student"
    assert fake.requests[0].body["response_format"] == {
        "type": "json_object",
        "schema": app.store.task("route").output_schema,
    }
    with pytest.raises(UserError, match="response_format 'xml'"):
        app.serve_student(student_id, "openai:x", base_url=fake.openai_base_url, response_format="xml")


def test_a_server_without_logprobs_gives_no_confidence(hosted):
    """Where the server sends no logprobs the answer carries no confidence (the gate cannot calibrate on it)."""
    app, student_id, fake = hosted
    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
    fake.add_final({"queue": "other"})
    result = app.run("route", INPUT)
    assert result.tier == "student" and result.attempts[0].confidence is None


def test_an_off_schema_answer_escalates_to_the_teacher(hosted):
    app, student_id, fake = hosted
    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
    fake.add_final({"queue": "sales"}, logprobs=[-0.1])
    result = app.run("route", INPUT)
    assert result.tier == "teacher" and result.output.queue == "billing"
    student_try = result.attempts[0]
    assert student_try.tier == "student" and not student_try.valid


def test_a_server_that_is_down_escalates_at_once(hosted):
    """No retries against a dead student server: the call fails over to the teacher."""
    app, student_id, _ = hosted
    app.serve_student(student_id, "openai:route-student", base_url=f"http://127.0.0.1:{free_port()}/v1")
    result = app.run("route", INPUT)
    assert result.tier == "teacher"
    assert "Connection" in " ".join(result.attempts[0].errors) or "connect" in " ".join(result.attempts[0].errors)


def test_serving_choices_are_checked_and_recorded(hosted):
    app, student_id, fake = hosted
    with pytest.raises(UserError, match="base_url"):
        app.serve_student(student_id, "openai:x")
    with pytest.raises(UserError, match="serving host 'vllm'"):
        app.serve_student(student_id, "vllm")
    with pytest.raises(UserError, match="no student 'nope'"):
        app.serve_student("nope", "torch")
    app.serve_student(student_id, "openai:x", base_url=fake.openai_base_url)
    assert app.store.student(student_id).metrics["serving"]["base_url"] == fake.openai_base_url
    app.serve_student(student_id, "torch")
    assert app.store.student(student_id).metrics["serving"]["host"] == "torch"


def test_the_cli_serves_and_lists_where_each_student_is_served(hosted, tmp_path):
    app, student_id, fake = hosted
    base = ["--db", f"sqlite:///{tmp_path}/app.db", "--project-dir", str(tmp_path / ".protege")]
    runner = CliRunner()
    done = runner.invoke(
        cli_app,
        [*base, "students", "serve", student_id[:8], "openai:route-student", "--base-url", fake.openai_base_url],
    )
    assert done.exit_code == 0, done.output
    assert f"served by openai:route-student @ {fake.openai_base_url}" in done.output
    listed = runner.invoke(cli_app, [*base, "students", "route", "--json"])
    assert json.loads(listed.output)[0]["metrics"]["serving"]["host"] == "openai:route-student"
    table = runner.invoke(cli_app, [*base, "students"], env={"COLUMNS": "200"})
    assert "served by" in table.output and "openai:route-student" in table.output
    bad = runner.invoke(cli_app, [*base, "students", "serve", student_id, "openai:x"])
    assert bad.exit_code == 2 and "needs --base-url" in bad.output  # the CLI's option, not the keyword


def test_llama_cpp_serving_is_refused_where_llama_cpp_python_is_not_installed(hosted, monkeypatch):
    """It was recorded anyway, and then every call of the task failed to load the student."""
    import sys

    app, student_id, _ = hosted
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what importing it finds where it is not installed
    with pytest.raises(UserError, match=r"needs llama-cpp-python.*pip install 'protege\[llama\]'"):
        app.serve_student(student_id, "llama.cpp")
    assert "serving" not in (app.store.student(student_id).metrics or {})
    assert not (app.settings.project_dir / "served").exists()  # refused before exporting


def test_a_student_that_cannot_be_loaded_raises_local_model_unavailable(tmp_path, monkeypatch):
    """A distinct UserError, so whoever serves a recorded student can escalate on it."""
    import sys

    from protege.agents.models.local import LocalModel, LocalModelUnavailable

    with pytest.raises(LocalModelUnavailable, match="does not exist"):
        LocalModel(tmp_path / "gone")
    with pytest.raises(LocalModelUnavailable, match="no config.json"):
        LocalModel(tmp_path)
    (tmp_path / "student-q8_0.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LocalModelUnavailable, match=r"pip install 'protege\[llama\]'"):
        LocalModel(tmp_path, engine="llama.cpp").engine  # noqa: B018  # loaded on first use


def test_a_student_distilled_in_another_directory_serves_and_exports_from_this_one(
    tmp_path, tiny_base, tmp_path_factory, monkeypatch
):
    """Rows from before paths were stored absolute hold the student's folder relative to where distill ran: a
    service started elsewhere (an absolute project dir) could not load it, and `students export` said its files
    were missing. They are read under the project dir."""
    import shutil

    from serving_support import trained_adapter

    app, student_id = make_app(tmp_path, tiny_base, trained_adapter(tiny_base, tmp_path_factory))
    folder = app.settings.project_dir / "students" / "route" / student_id / "adapter"
    shutil.copytree(app.store.student(student_id).adapter_path, folder)
    app.store.update_student(student_id, adapter_path=f".protege/students/route/{student_id}/adapter")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    try:
        result = app.run("route", INPUT, tier="student", escalate=False)
        assert result.tier == "student" and result.model == f"local:{student_id}"
        out = app.export_student(student_id, tmp_path / "hf", format="hf")
        assert (out / "model.safetensors").is_file()
    finally:
        app.close()


def _student(fake_or_url, **options):
    from protege.agents.models.hosted import HostedStudent

    url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.openai_base_url
    return HostedStudent("openai:route-student", student_id="s1", base_url=url, **options)


def _request():
    from protege.agents.models.base import Message, ModelRequest

    return ModelRequest(
        messages=[Message(role="user", content='{"message":{"text":"hi"}}')],
        output_schema={"type": "object", "properties": {"queue": {"type": "string"}}},
        max_tokens=16,
    )


def test_concurrent_calls_to_a_student_server_share_its_time(hosted):
    """Each call was charged its whole wait, queue included: 4 calls answered together cost 4 x the wall time.
    Concurrent calls on one server share the time it was busy with them."""
    import asyncio
    import time

    _, _, fake = hosted
    for _ in range(4):
        fake.add_final({"queue": "bug"}, delay=0.3)
    student = _student(fake)

    async def together():
        return await asyncio.gather(*(student.request(_request()) for _ in range(4)))

    began = time.perf_counter()
    answers = asyncio.run(together())
    wall = time.perf_counter() - began
    assert sum(a.usage.compute_s for a in answers) <= wall + 0.01
    assert sum(a.usage.compute_s for a in answers) >= 0.3


@pytest.fixture
def stuck_server():
    """A server that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(32)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_a_stuck_server_is_skipped_for_a_cool_down_after_calls_in_a_row_time_out(stuck_server, caplog):
    """Every call waited 30 s on a server that never answers, with no way to shorten it. A short timeout, then
    after FAILURES_TO_SKIP timeouts in a row calls fail at once for the cool-down (one warning), then try again."""
    import asyncio
    import time

    from protege.agents.models.hosted import DEFAULT_TIMEOUT_S, FAILURES_TO_SKIP
    from protege.errors import ModelError, ModelTimeout

    assert _student(stuck_server).timeout_s == DEFAULT_TIMEOUT_S <= 10
    student = _student(stuck_server, timeout=0.2, cool_down_s=0.6)

    def call() -> tuple[type, str, float]:
        began = time.perf_counter()
        try:
            asyncio.run(student.request(_request()))
        except ModelError as exc:
            return type(exc), str(exc), time.perf_counter() - began
        raise AssertionError("a stuck server answered")

    with caplog.at_level("WARNING", logger="protege.agents.models.hosted"):
        for _ in range(FAILURES_TO_SKIP):
            kind, _, took = call()
            assert kind is ModelTimeout and 0.15 < took < 2
        kind, message, took = call()
        assert kind is ModelError and took < 0.1 and "skipped for" in message and "start the server" in message
        time.sleep(0.6)
        kind, _, took = call()  # the cool-down is over: tried again (and skipped again, without a new warning)
        assert kind is ModelTimeout
        assert "skipped for" in call()[1]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "straight to the next tier" in warnings[0].getMessage()


def test_the_servers_timeout_is_kept_with_the_serving_record(hosted, tmp_path):
    app, student_id, fake = hosted
    record = app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url, timeout_s=2.5)
    assert record["timeout_s"] == 2.5
    assert app.tiers.model(f"local:{student_id}").timeout_s == 2.5
    with pytest.raises(UserError, match=r"timeout -1 is not a number of seconds above 0"):
        app.serve_student(student_id, "openai:x", base_url=fake.openai_base_url, timeout_s=-1)
    with pytest.raises(UserError, match=r"timeout_s=3 applies to an 'openai:<name>' host"):
        app.serve_student(student_id, "torch", timeout_s=3)
    base = ["--db", f"sqlite:///{tmp_path}/app.db", "--project-dir", str(tmp_path / ".protege")]
    args = ["students", "serve", student_id, "openai:route-student", "--base-url", fake.openai_base_url]
    done = CliRunner().invoke(cli_app, [*base, *args, "--timeout", "4", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["timeout_s"] == 4
    assert app.store.student(student_id).metrics["serving"]["timeout_s"] == 4


def test_a_server_that_refuses_logprobs_is_asked_again_without_them(hosted, caplog):
    """llama-cpp-python's server started with --logits_all false answers HTTP 500 to a logprobs request: every
    call escalated. The request is sent again without them, and they are not asked for again (one warning)."""
    app, student_id, fake = hosted
    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
    refusal = "logprobs is not supported for models created with logits_all=False"
    fake.add_fault(500, message=refusal, retry_after=None)
    fake.add_final({"queue": "bug"})
    fake.add_final({"queue": "bug"})
    with caplog.at_level("WARNING", logger="protege.agents.models.hosted"):
        first, second = app.run("route", INPUT), app.run("route", INPUT)
    assert first.tier == second.tier == "student" and first.attempts[0].confidence is None
    asked = [r.body.get("logprobs") for r in fake.requests]
    assert asked == [True, None, None]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "refuses logprobs" in warnings[0]


def test_an_answer_without_confidence_escalates_under_the_floor_the_policy_sets(hosted, caplog):
    """With Policy(min_confidence=0.9) an answer that carries no confidence was served, as if it had passed."""
    from protege import Policy

    app, student_id, fake = hosted

    @app.task(name="route", policy=Policy(min_confidence=0.9, shadow_rate=0))
    def route(message: Message) -> Routing:
        """Sort the message into a queue."""

    app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
    fake.add_final({"queue": "bug"})
    fake.add_final({"queue": "bug"})
    with caplog.at_level("WARNING", logger="protege.agents.cascade"):
        first, second = app.run("route", INPUT), app.run("route", INPUT)
    assert first.tier == second.tier == "teacher"
    assert "no confidence to hold to min_confidence 0.9" in first.attempts[0].errors[0]
    warnings = [r.getMessage() for r in caplog.records if "carry no confidence" in r.getMessage()]
    assert len(warnings) == 1


def test_replicas_serving_on_llama_cpp_at_once_use_the_first_export(tmp_path):
    """Two replicas running `students serve ID llama.cpp` export into the same served/ folder: the one that loses
    the race used to fail; it uses the winner's GGUF."""
    from types import SimpleNamespace

    from protege.services.serving import _exported_gguf

    def lose_the_race(student_id, folder, *, format, quant):
        folder.mkdir(parents=True)
        (folder / f"student-{quant}.gguf").write_bytes(b"GGUF")  # the other replica finished first
        raise UserError(f"output folder {str(folder)!r} was written by another writer while this one ran")

    app = SimpleNamespace(settings=SimpleNamespace(project_dir=tmp_path), export_student=lose_the_race)
    gguf = _exported_gguf(app, SimpleNamespace(id="s1"), "q8_0")
    assert gguf.read_bytes() == b"GGUF"


def test_a_running_app_follows_a_host_change_made_by_another_process(hosted):
    """`protege students serve` in another shell only writes the student's serving record; a running service read
    the row again every few seconds but kept the model it had loaded, so its calls went to the old host for good."""
    from protege.services.serving import SERVING_KEY

    app, student_id, fake = hosted
    with FakeProvider() as other:
        app.serve_student(student_id, "openai:route-student", base_url=fake.openai_base_url)
        fake.add_final({"queue": "bug"}, logprobs=[-0.01])
        assert app.run("route", INPUT).tier == "student" and len(fake.requests) == 1
        row = app.store.student(student_id)  # what another process's `students serve` writes, and nothing else
        moved = {"host": "openai:moved", "base_url": other.openai_base_url, "response_format": "json_schema"}
        app.store.update_student(student_id, metrics={**(row.metrics or {}), SERVING_KEY: moved})
        app.tiers._cache.invalidate(None)  # what the read cache's expiry does a few seconds later
        other.add_final({"queue": "account"}, logprobs=[-0.01])
        result = app.run("route", INPUT)
        assert result.tier == "student" and result.output.queue == "account"
        assert len(fake.requests) == 1 and other.requests[0].body["model"] == "moved"
