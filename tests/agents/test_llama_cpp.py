"""The llama.cpp engine on an exported GGUF: the torch engine's answers and confidences on the same inputs, the
engine named in each answer, the GBNF grammar accepted by llama.cpp, and a student served by llama.cpp's own
OpenAI-compatible server process on loopback (escalation included). Skipped without llama-cpp-python."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from serving_support import MESSAGES, adapter_with_short_bound, make_app, trained_adapter

from protege.agents import FunctionModel
from protege.agents.models.base import ModelRequest
from protege.agents.models.chat_format import student_messages
from protege.agents.models.local import LocalModel
from protege.errors import UserError

llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llama extra: pip install 'protege[llama]'")

INSTRUCTIONS = "Sort the message into a queue."
TEXTS = [text for text, _ in MESSAGES] + ["my invoice is wrong", "the button does nothing"]


@pytest.fixture
def exported(tmp_path, tiny_base, tmp_path_factory):
    app, student_id = make_app(
        tmp_path,
        tiny_base,
        trained_adapter(tiny_base, tmp_path_factory),
        teacher=FunctionModel(lambda req: json.dumps({"queue": "other"})),
    )
    yield app, student_id
    app.close()


def requests(app, max_tokens: int = 64) -> list[ModelRequest]:
    schema = app.store.task("route").output_schema
    return [
        ModelRequest(
            messages=student_messages(INSTRUCTIONS, {"message": {"text": t}}),
            output_schema=schema,
            max_tokens=max_tokens,
        )
        for t in TEXTS
    ]


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_llama_cpp_answers_as_the_torch_engine(exported, tmp_path, tiny_base, quant):
    """Same answers token for token, confidences within rounding, on a handful of inputs."""
    app, student_id = exported
    out = app.export_student(student_id, tmp_path / quant, quant=quant)
    row = app.store.student(student_id)
    torch_model = LocalModel(tiny_base, adapter=row.adapter_path)
    llama_model = LocalModel(out, engine="llama.cpp")
    assert type(llama_model).__name__ == "LlamaCppModel"
    for req in requests(app):
        ours, theirs = llama_model.generate(req), torch_model.generate(req)
        assert ours.text == theirs.text
        assert ours.confidence == pytest.approx(theirs.confidence, abs=0.02)
        assert ours.raw["engine"] == "llama.cpp" and ours.usage.compute_s > 0


def test_a_batch_and_concurrent_calls_answer_as_single_calls(exported, tmp_path):
    app, student_id = exported
    model = LocalModel(app.export_student(student_id, tmp_path / "g"), engine="llama.cpp")
    reqs = requests(app)
    alone = [model.generate(r).text for r in reqs]
    assert [r.text for r in model.generate_batch(reqs)] == alone


def test_an_exported_folder_decodes_under_the_students_answer_profile(tmp_path, tiny_base, tmp_path_factory):
    """The bounds learned from the traces, exported beside the GGUF, bind the llama.cpp engine as they bind torch."""
    adapter = adapter_with_short_bound(tiny_base, tmp_path_factory, tmp_path / "adapter")
    app, student_id = make_app(tmp_path, tiny_base, adapter)
    try:
        llama_model = LocalModel(app.export_student(student_id, tmp_path / "g"), engine="llama.cpp")
        torch_model = LocalModel(tiny_base, adapter=adapter)
        for req in requests(app)[:2]:
            ours, theirs = llama_model.generate(req), torch_model.generate(req)
            assert ours.stop_reason == theirs.stop_reason == "max_tokens" and ours.text == theirs.text
    finally:
        app.close()


def test_a_bad_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="needs a GGUF file"):
        LocalModel(tmp_path, engine="llama.cpp")
    with pytest.raises(UserError, match="engine 'onnx'"):
        LocalModel(tmp_path, engine="onnx")


def test_serve_student_on_llama_cpp_answers_through_the_cascade(exported):
    """app.serve_student(id, "llama.cpp") exports the GGUF once and the student tier answers with it."""
    app, student_id = exported
    record = app.serve_student(student_id, "llama.cpp")
    assert record["gguf"].endswith("student-q8_0.gguf")
    result = app.run("route", {"message": {"text": "refund my card"}}, tier="student", escalate=False)
    assert result.tier == "student"
    trace = app.store.trace(result.trace_ids[0])
    assert trace.raw[0]["engine"] == "llama.cpp" and trace.model == f"local:{student_id}"


def test_llama_cpp_accepts_the_exported_gbnf_and_samples_valid_answers(exported, tmp_path):
    """The grammar in protege_serving.json parses in llama.cpp, and answers sampled under it validate."""
    app, student_id = exported
    out = app.export_student(student_id, tmp_path / "g")
    manifest = json.loads((out / "protege_serving.json").read_text())
    grammar = llama_cpp.LlamaGrammar.from_string(manifest["grammar_gbnf"], verbose=False)
    llm = llama_cpp.Llama(str(out / "student-q8_0.gguf"), n_ctx=512, verbose=False)
    try:
        for text in TEXTS[:3]:
            prompt = manifest["prompt_template"].replace(
                "{input}", json.dumps({"message": {"text": text}}, separators=(",", ":"))
            )
            done = llm.create_completion(prompt, grammar=grammar, max_tokens=32, temperature=0)
            answer = json.loads(done["choices"][0]["text"])
            assert answer["queue"] in ("billing", "bug", "account", "other")
    finally:
        llm.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llama_server(exported, tmp_path):
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    app, student_id = exported
    out = app.export_student(student_id, tmp_path / "served")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(out / "student-q8_0.gguf"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
            "--logits_all",
            "true",
            "--model_alias",
            "route-student",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield app, student_id, url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_cascade_serves_from_a_real_llama_cpp_server_and_escalates_when_it_stops(llama_server):
    app, student_id, url, proc = llama_server
    app.serve_student(student_id, "openai:route-student", base_url=url, response_format="json_object")
    result = app.run("route", {"message": {"text": "refund my card"}})
    assert result.tier == "student", result.attempts
    assert 0 < result.attempts[0].confidence <= 1  # from the server's logprobs
    proc.terminate()
    proc.wait(timeout=30)
    result = app.run("route", {"message": {"text": "nice weather"}})
    assert result.tier == "teacher" and not result.attempts[0].valid


def test_q4_k_m_is_made_by_llama_cpps_quantizer_and_answers(exported, tmp_path):
    """k-quants come from llama.cpp's own quantizer (the gguf package cannot write them)."""
    import gguf

    app, student_id = exported
    out = app.export_student(student_id, tmp_path / "q4", quant="q4_k_m")
    assert sorted(p.name for p in out.glob("*.gguf")) == ["student-q4_k_m.gguf"]
    assert gguf.GGUFReader(out / "student-q4_k_m.gguf").fields["general.file_type"].contents() == 15
    answer = LocalModel(out, engine="llama.cpp").generate(requests(app)[0])
    assert json.loads(answer.text)["queue"] in ("billing", "bug", "account", "other")


class _Clock:
    """A fake clock that a fake llama.cpp context advances by its pass time: the choice is tested without timing."""

    def __init__(self, pass_ms: dict[int, float]):
        self.now, self.pass_ms, self.threads, self.passes = 0.0, pass_ms, 1, {n: 0 for n in pass_ms}

    def perf_counter(self) -> float:
        return self.now

    def set_n_threads(self, n: int, n_batch: int) -> None:
        self.threads = n

    def decode(self, batch) -> None:
        self.now += self.pass_ms[self.threads] / 1000
        self.passes[self.threads] += 1

    def kv_cache_seq_rm(self, *args) -> None:
        pass


def _fake_llm(clock: _Clock):
    from types import SimpleNamespace

    batch = SimpleNamespace(set_batch=lambda **kw: None)
    return SimpleNamespace(_ctx=clock, _batch=batch, token_bos=lambda: 1)


@pytest.mark.parametrize(
    ("pass_ms", "chosen"),
    [({1: 12.0, 2: 8.0}, 2), ({1: 31.0, 2: 41.0}, 1), ({1: 10.0, 2: 10.0}, 1), ({1: 3.0, 2: 5.0, 4: 2.0}, 4)],
)
def test_decode_threads_are_the_fastest_measured(monkeypatch, pass_ms, chosen):
    """Quiet 2-core AMD EPYC: 2 threads won; loaded 2-core Xeon: 1 did; a tie keeps fewer threads."""
    from protege.agents.models import llama_cpp as engine

    clock = _Clock(pass_ms)
    monkeypatch.setattr(engine, "time", clock)
    assert engine._fastest_threads(_fake_llm(clock), sorted(pass_ms)) == chosen


def test_a_count_whose_passes_take_seconds_is_dropped_after_one_pass(monkeypatch):
    """Beside a busy process a 2-thread pass took 3-16 s here: measuring it must not cost many of them."""
    from protege.agents.models import llama_cpp as engine

    clock = _Clock({1: 12.0, 2: 5000.0})
    monkeypatch.setattr(engine, "time", clock)
    assert engine._fastest_threads(_fake_llm(clock), [1, 2]) == 1
    assert clock.passes[2] == 1 and clock.now < 6


def test_measuring_threads_leaves_no_trace_in_the_answers(exported, tmp_path):
    """The calibration's passes are cleared from llama.cpp's cache: answers are those of a fixed thread count."""
    app, student_id = exported
    out = app.export_student(student_id, tmp_path / "gguf", quant="q8_0")
    measured = LocalModel(out, engine="llama.cpp")
    assert measured.engine.decode_threads >= 1
    fixed = LocalModel(out, engine="llama.cpp", threads=1)
    for request in requests(app)[:3]:
        assert measured.generate(request).text == fixed.generate(request).text


def test_every_pass_runs_on_the_engines_one_thread(exported, tmp_path, monkeypatch):
    """OpenMP keeps a thread team per calling thread: calls from a pool of threads must not each wake their own."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from protege.agents.models import llama_cpp as engine

    app, student_id = exported
    model = LocalModel(app.export_student(student_id, tmp_path / "gguf", quant="q8_0"), engine="llama.cpp")
    callers, step = set(), engine._LlamaRow.step

    def recorded(self, *args, **kwargs):
        callers.add(threading.current_thread().name)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(engine._LlamaRow, "step", recorded)
    alone = [model.generate(r).text for r in requests(app)[:4]]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda r: model.generate(r).text, requests(app)[:4])) == alone
    assert len(callers) == 1 and callers.pop().startswith("protege-local-model")


def test_the_thread_counts_are_measured_again_when_passes_slow_down_or_time_passes():
    """Load that comes (one-token passes 2x slower than the best since the last measurement) is acted on after the
    gap; load that goes waits for the periodic measurement; a reset starts both over."""
    from protege.agents.models.llama_cpp import REMEASURE_EVERY_S, REMEASURE_GAP_S, PassWatch

    now = [0.0]
    watch = PassWatch(clock=lambda: now[0], window=4)
    for seconds in (0.008, 0.009, 0.008, 0.008):
        watch.record(seconds)
    now[0] = REMEASURE_GAP_S + 1
    assert not watch.due()  # steady
    for seconds in (0.030, 2.5, 0.9, 3.1):  # a busy core: 2-thread passes spin
        watch.record(seconds)
    assert watch.due()
    watch.reset()
    for seconds in (0.030, 0.031, 0.029, 0.032):
        watch.record(seconds)
    now[0] += REMEASURE_GAP_S - 1
    assert not watch.due()  # measured under the load: these are its normal passes
    now[0] = watch.since + REMEASURE_EVERY_S
    assert watch.due()


def test_a_measurement_mid_service_leaves_no_trace_in_the_answers(exported, tmp_path, monkeypatch):
    """Measured again between two answers (the cache cleared, the prefix fed anew): the answers stay the same;
    fixed `threads` are never measured."""
    from protege.agents.models import llama_cpp as engine

    app, student_id = exported
    out = app.export_student(student_id, tmp_path / "gguf", quant="q8_0")
    model = LocalModel(out, engine="llama.cpp")
    first = [model.generate(r).text for r in requests(app)[:3]]
    measured = []
    monkeypatch.setattr(engine.PassWatch, "due", lambda self: True)
    monkeypatch.setattr(engine, "_fastest_threads", lambda llm, candidates, **kw: measured.append(kw) or 1)
    assert [model.generate(r).text for r in requests(app)[:3]] == first
    assert len(measured) == 6  # prompts and decoding, before each answer
    LocalModel(out, engine="llama.cpp", threads=1).generate(requests(app)[0])
    assert len(measured) == 6
