"""A student served by an OpenAI-compatible server, against the fake provider: the request carries the training
prompt, the output schema and a logprobs request; the confidence comes from the logprobs; a server that is down
or answers off-schema escalates; the host is recorded on the student and shown by the CLI."""

from __future__ import annotations

import json
import math
import socket

import pytest
from serving_support import make_app
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
