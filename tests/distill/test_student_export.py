"""Exporting a trained student: a merged checkpoint that answers as the student does, a GGUF with its Modelfile,
the serving manifest (prompt template, schema, grammar), and clear errors for what cannot be exported."""

from __future__ import annotations

import json
import re

import pytest
from serving_support import (
    INSTRUCTIONS,
    MESSAGES,
    Message,
    Routing,
    adapter_with_short_bound,
    make_app,
    trained_adapter,
)

from protege.agents.models.base import ModelRequest
from protege.agents.models.chat_format import student_messages
from protege.errors import UserError


@pytest.fixture
def served(tmp_path, tiny_base, tmp_path_factory):
    app, student_id = make_app(tmp_path, tiny_base, trained_adapter(tiny_base, tmp_path_factory))
    yield app, student_id
    app.close()


def requests(app) -> list[ModelRequest]:
    schema = app.store.task("route").output_schema
    return [
        ModelRequest(
            messages=student_messages("Sort the message into a queue.", {"message": {"text": text}}),
            output_schema=schema,
            max_tokens=64,
        )
        for text, _ in MESSAGES
    ]


def test_hf_export_is_a_plain_checkpoint_that_answers_as_the_student(served, tmp_path, tiny_base):
    """The merged checkpoint loads without the adapter, differs from the base, and gives the student's answers."""
    from safetensors.numpy import load_file

    from protege.agents.models.local import LocalModel

    app, student_id = served
    out = app.export_student(student_id, tmp_path / "hf", format="hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "protege_serving.json"} <= names
    assert "adapter_config.json" not in names
    row = app.store.student(student_id)
    student = LocalModel(tiny_base, adapter=row.adapter_path)
    merged = LocalModel(out)
    for req in requests(app):
        assert merged.generate(req).text == student.generate(req).text
    base_q = load_file(tiny_base / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    merged_q = load_file(out / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert abs(merged_q - base_q).max() > 1e-4  # the adapter is in the weights, not beside them
    # safetensors wrote the weights 0600 beside 0644 files: a server running as another user could not read them
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {modes["protege_serving.json"]}, modes


def test_gguf_export_writes_the_model_a_modelfile_and_the_serving_manifest(served, tmp_path):
    """The GGUF holds llama hyperparameters, the BPE vocabulary and chat template, q8_0 weights and f32 norms."""
    import gguf

    app, student_id = served
    out = app.export_student(student_id, tmp_path / "gguf")
    names = {p.name for p in out.iterdir()}
    assert {"Modelfile", "protege_serving.json", "student-q8_0.gguf", "tokenizer.json"} <= names
    assert not any(name.startswith(".") or name.endswith(".safetensors") for name in names)
    reader = gguf.GGUFReader(out / "student-q8_0.gguf")
    fields = {k: f.contents() for k, f in reader.fields.items() if k != "tokenizer.ggml.merges"}
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "smollm"
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./student-q8_0.gguf\n")
    assert "{{ .System }}" in modelfile and "{{ .Prompt }}" in modelfile and 'SYSTEM """Sort the message' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile

    manifest = json.loads((out / "protege_serving.json").read_text())
    assert manifest["student_id"] == student_id and manifest["quant"] == "q8_0"
    assert manifest["output_schema"]["properties"]["queue"]["enum"] == ["billing", "bug", "account", "other"]
    assert '"\\"billing\\""' in manifest["grammar_gbnf"]
    prompt = manifest["prompt_template"].replace("{input}", '{"message":{"text":"hi"}}')
    assert prompt.endswith('<|im_start|>user\n{"message":{"text":"hi"}}<|im_end|>\n<|im_start|>assistant\n')
    assert manifest["openai_request"]["response_format"]["json_schema"]["schema"] == manifest["output_schema"]


def test_the_served_model_has_one_name_and_the_request_is_the_one_protege_sends(served, tmp_path):
    """README said `student`, the CLI `protege-student`, the manifest `protege-<task>`; the manifest's request
    lacked top_logprobs (llama-cpp-python's server sends no logprobs without it) and max_tokens."""
    import gguf

    from protege.agents.models.base import Message, ModelRequest
    from protege.agents.models.hosted import HostedStudent

    app, student_id = served
    out = app.export_student(student_id, tmp_path / "gguf")
    manifest = json.loads((out / "protege_serving.json").read_text())
    assert manifest["served_name"] == "protege-route"
    reader = gguf.GGUFReader(out / "student-q8_0.gguf")
    assert reader.fields["general.name"].contents() == "protege-route"
    messages = [Message(role=m["role"], content=m["content"]) for m in manifest["messages"]]
    sent = HostedStudent("openai:protege-route", student_id=student_id, base_url="http://x/v1").params(
        ModelRequest(messages=messages, output_schema=manifest["output_schema"], max_tokens=2048)
    )
    assert manifest["openai_request"] == sent
    assert sent["model"] == "protege-route" and sent["top_logprobs"] == 1 and sent["max_tokens"] == 2048


@pytest.mark.parametrize("quant", ["f16", "f32"])
def test_float_exports_keep_weights_in_their_precision(served, tmp_path, quant):
    import gguf

    app, student_id = served
    out = app.export_student(student_id, tmp_path / quant, format="gguf", quant=quant)
    reader = gguf.GGUFReader(out / f"student-{quant}.gguf")
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2} == {quant.upper()}


def test_what_cannot_be_exported_is_a_user_error(served, tmp_path):
    """Unknown id, bad format or quant, an existing folder, files altered or missing since training."""
    app, student_id = served
    with pytest.raises(UserError, match="no student 'nope'"):
        app.export_student("nope", tmp_path / "a")
    with pytest.raises(UserError, match="export format 'onnx'"):
        app.export_student(student_id, tmp_path / "a", format="onnx")
    with pytest.raises(UserError, match="quant 'q3'"):
        app.export_student(student_id, tmp_path / "a", quant="q3")
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        app.export_student(student_id, tmp_path / "taken")
    row = app.store.student(student_id)
    app.store.update_student(student_id, adapter_hash="0" * 64)
    with pytest.raises(UserError, match="do not match the hash"):
        app.export_student(student_id, tmp_path / "a")
    app.store.update_student(student_id, adapter_path=str(tmp_path / "gone"), adapter_hash=row.adapter_hash)
    with pytest.raises(UserError, match="files are missing"):
        app.export_student(student_id, tmp_path / "a")
    assert not (tmp_path / "a").exists() and not (tmp_path / ".a.tmp").exists()


def test_the_cli_exports_and_refuses_an_existing_folder(served, tmp_path):
    from typer.testing import CliRunner

    from protege.cli import app as cli_app

    app, student_id = served
    base = ["--db", f"sqlite:///{tmp_path}/app.db", "--project-dir", str(tmp_path / ".protege")]
    done = CliRunner().invoke(
        cli_app, [*base, "students", "export", student_id[:8], "--format", "hf", "--out", str(tmp_path / "cli-hf")]
    )
    assert done.exit_code == 0, done.output
    assert "exported student" in done.output and (tmp_path / "cli-hf" / "model.safetensors").is_file()
    again = CliRunner().invoke(cli_app, [*base, "students", "export", student_id, "--out", str(tmp_path / "cli-hf")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_the_students_answer_profile_travels_with_its_export(tmp_path, tiny_base, tmp_path_factory):
    """An export holds the bounds learned from the student's traces, so the folder decodes as the student does."""
    from protege.agents.models.answer_profile import PROFILE_FILE, read_profile
    from protege.agents.models.local import LocalModel

    adapter = adapter_with_short_bound(tiny_base, tmp_path_factory, tmp_path / "adapter")
    app, student_id = make_app(tmp_path, tiny_base, adapter)
    try:
        hf = app.export_student(student_id, tmp_path / "hf", format="hf")
        gguf = app.export_student(student_id, tmp_path / "gguf")
        assert read_profile(hf) == read_profile(gguf) == read_profile(adapter)
        assert PROFILE_FILE in json.loads((gguf / "protege_serving.json").read_text())["files"]
        request = requests(app)[0]
        merged, student = LocalModel(hf).generate(request), LocalModel(tiny_base, adapter=adapter).generate(request)
        assert merged.stop_reason == student.stop_reason == "max_tokens" and merged.text == student.text
    finally:
        app.close()


def test_the_exported_grammar_writes_a_tuple_position_by_position():
    """tuple[int, str] becomes `[` int `,` string `]` in GBNF (not any JSON value), and llama.cpp accepts it."""
    from pydantic import BaseModel

    from protege.distill.gbnf import schema_to_gbnf

    class Pair(BaseModel):
        pair: tuple[int, str]

    text = schema_to_gbnf(Pair.model_json_schema())
    tuple_rule = next(line for line in text.splitlines() if '"[" ' in line and '","' in line)
    assert tuple_rule.split(" ::= ")[1].startswith('"[" v') and tuple_rule.endswith('"]"')
    llama_cpp = pytest.importorskip("llama_cpp")
    assert llama_cpp.LlamaGrammar.from_string(text, verbose=False) is not None


def test_the_exported_grammar_writes_integers_as_wide_as_the_schema_bounds():
    """A bound wider than the runaway guard's 18 digits widens the decoder's numbers; the GBNF kept 18, so a
    server constrained by it could not write an answer the student and the schema allow."""
    from pydantic import BaseModel, Field

    from protege.distill.gbnf import schema_to_gbnf

    class Big(BaseModel):
        n: int = Field(ge=0, le=10**24)

    text = schema_to_gbnf(Big.model_json_schema())
    assert "[0-9]{0,24}" in text and "[0-9]{0,17}" not in text


def test_a_q4_k_m_export_prints_one_summary_line_not_llama_cpps_log(served, tmp_path):
    """llama.cpp's loader and quantizer printed ~400 lines (metadata dump, a line per tensor): its log is read for
    one line saying how many tensors fell back to another type, which the serving manifest keeps too."""
    pytest.importorskip("llama_cpp", reason="needs the llama extra: pip install 'protege[llama]'")
    from typer.testing import CliRunner

    from protege.cli import app as cli_app

    app, student_id = served
    base = ["--db", f"sqlite:///{tmp_path}/app.db", "--project-dir", str(tmp_path / ".protege")]
    out = tmp_path / "q4"
    done = CliRunner().invoke(
        cli_app, [*base, "students", "export", student_id, "--quant", "q4_k_m", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    lines = [re.sub(r".*it/s\]", "", line) for line in done.output.splitlines()]  # tqdm's bars (main() hides them)
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 3 and "llama_model_loader" not in done.output, done.output  # exported, summary, Ollama
    summary = json.loads((out / "protege_serving.json").read_text())["quantization"]
    assert (summary["tensors"], summary["fallback_tensors"], summary["fallback_types"]) == (20, 14, ["q5_0", "q8_0"])
    assert summary["summary"] in done.output and "14 of them fell back to q5_0 or q8_0" in summary["summary"]


def test_a_tool_tasks_export_keeps_the_tool_list_it_was_trained_with(tmp_path, tiny_base, tmp_path_factory):
    """Training rows' system turn lists the tools (`Tools (call one with <tool_call>...`); the exported messages,
    prompt and Modelfile SYSTEM left it out, and the grammar allowed no tool call."""
    from protege import Protege
    from protege.agents.models.chat_format import TOOLS_HEADER, to_chat_dicts
    from protege.distill.pipeline import dir_hash
    from protege.store import DatasetRow, StudentRow

    adapter = trained_adapter(tiny_base, tmp_path_factory)
    app = Protege(db=f"sqlite:///{tmp_path}/app.db", project_dir=tmp_path / ".protege", student_base=str(tiny_base))
    try:

        def plan_of(email: str) -> str:
            """The customer's plan."""
            return "pro"

        @app.task(tools=[plan_of])
        def route(message: Message) -> Routing:
            """Sort the message into a queue."""

        specs = app.tasks["route"].runtime.tools.specs
        trained = to_chat_dicts(student_messages(INSTRUCTIONS, {"message": {"text": "hi"}}, specs))
        folder = tmp_path / ".protege" / "datasets" / "route" / "d1"
        folder.mkdir(parents=True)
        (folder / "train.jsonl").write_text(json.dumps({"messages": trained}) + "\n")
        dataset = app.store.add_dataset(DatasetRow(task_name="route", path=str(folder), content_hash="h"))
        row = app.store.add_student(
            StudentRow(
                task_name="route",
                base=str(tiny_base),
                adapter_path=str(adapter),
                adapter_hash=dir_hash(adapter),
                dataset_id=dataset.id,
            )
        )
        out = app.export_student(row.id, tmp_path / "gguf")
        manifest = json.loads((out / "protege_serving.json").read_text())
        system = trained[0]["content"]
        assert TOOLS_HEADER in system and '"name":"plan_of"' in system
        assert manifest["messages"][0]["content"] == system == manifest["openai_request"]["messages"][0]["content"]
        assert system in manifest["prompt_template"]
        assert f'SYSTEM """{system}"""' in (out / "Modelfile").read_text()
        grammar = manifest["grammar_gbnf"]
        assert grammar.startswith("root ::= v") and '"<tool_call>"' in grammar and '\\"plan_of\\"' in grammar
        llama_cpp = pytest.importorskip("llama_cpp")
        assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None
    finally:
        app.close()
