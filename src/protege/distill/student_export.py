"""Export a student to where people serve models: a plain checkpoint, or a GGUF with an Ollama Modelfile.

`export_student(...)` writes one new folder:
    --format hf     the adapter merged into its base: config.json, model.safetensors, tokenizer with its chat
                    template (loads in transformers, vLLM, TGI, and llama.cpp's own converter)
    --format gguf   student-<quant>.gguf (llama.cpp, Ollama, LM Studio), an Ollama `Modelfile`, and the tokenizer
                    files (protege's llama.cpp engine renders prompts with them)
and, in both, the student's answer profile (`protege_answers.json`: the bounds and copy rules learned from its
traces, so `LocalModel(folder)` decodes as the student does) and `protege_serving.json`: what a server-side caller
needs to reproduce a call exactly — the messages and the rendered prompt template (with the system turn it was
trained on: the task's instructions and, for a task with tools, the tool list), the output JSON schema, its GBNF
grammar (for a task with tools: the answer or one tool call), the stop strings, and the OpenAI request body
protege's student tier sends. Every name for the served model (the GGUF's, the Ollama model's, the request's) is
`served_name`: protege-<task>. The student's files are checked against the hash recorded when it was trained, so
an altered adapter is never exported as that student.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protege.agents.models.answer_profile import PROFILE_FILE
from protege.agents.models.base import FINAL_TOOL, ToolSpec
from protege.distill.export import TRAIN_FILE, atomic_dir
from protege.errors import UserError

SERVING_FILE = "protege_serving.json"
QUANTIZATION_KEY = "quantization"  # in SERVING_FILE, where llama.cpp's quantizer made the GGUF
SERVED_NAME_KEY = "served_name"  # in SERVING_FILE: the one name of the served model, protege-<task>
MODELFILE = "Modelfile"
FORMATS = ("hf", "gguf")
QUANTS = ("f32", "f16", "q8_0", "q4_k_m")
INPUT_SLOT = "{input}"
_USER_MARK = "\x00PROTEGE_INPUT\x00"


def export_student(
    store: Any,
    student_id: str,
    out: str | Path,
    *,
    fmt: str = "gguf",
    quant: str | None = None,
    base_dir: Callable[[str], Path],
    project_dir: Path,
) -> Path:
    """Write the student `student_id` to the new folder `out` as `fmt` ("hf" or "gguf", in `quant`). `project_dir`:
    where the student's files are, when its row holds them relative (as rows did before paths were absolute)."""
    out = Path(out)
    quant = _check_options(fmt, quant)
    row = store.student(student_id)
    if row is None:
        known = ", ".join(r.id[:12] for r in store.students()[:5]) or "none yet"
        raise UserError(f"no student {student_id!r}; list students with `protege students` (ids: {known})")
    task = store.task(row.task_name)
    if task is None:
        raise UserError(f"student {row.id!r} belongs to task {row.task_name!r}, which is not in this store")
    adapter = _verified_files(row, project_dir)
    tools = trained_tools(store, row, project_dir)
    with atomic_dir(out, what="output folder", advice="export into a new folder (or remove it)") as stage:
        _write(stage, row, task, tools, adapter, base_dir(row.base), fmt, quant)
        _readable_like_the_rest(stage)
    return out


def served_name(task_name: str) -> str:
    """The served model's one name: the GGUF's, the Ollama model's and the OpenAI request's."""
    return f"protege-{task_name}"


def _check_options(fmt: str, quant: str | None) -> str:
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "hf":
        if quant not in (None, "f16"):
            raise UserError(f"--quant {quant!r} applies to GGUF; --format hf writes float weights (or --quant f16)")
        return quant or "f32"
    if quant is not None and quant not in QUANTS:
        raise UserError(f"quant {quant!r} is not one of {', '.join(QUANTS)}")
    return quant or "q8_0"


def _verified_files(row: Any, project_dir: Path) -> Path:
    """The student's folder, checked against the hash stored at training time."""
    from protege.distill.pipeline import dir_hash
    from protege.distill.prune import student_files

    adapter = student_files(row, project_dir)
    if not adapter.is_dir() or not any(adapter.iterdir()):
        raise UserError(f"student {row.id!r}: its files are missing ({str(adapter)!r}); distill the task again")
    if row.adapter_hash and dir_hash(adapter) != row.adapter_hash:
        raise UserError(
            f"the files of student {row.id!r} in {str(adapter)!r} do not match the hash recorded when it was "
            f"trained (changed since); restore them or distill the task again"
        )
    return adapter


def trained_tools(store: Any, row: Any, project_dir: Path) -> list[ToolSpec]:
    """The tools listed in the student's training prompts: read back from the system turn of its dataset's first
    row (a tool task's rows all list them), else those the task's latest teacher trace was offered; none for a
    plain task."""
    from protege.distill.prune import in_project

    dataset = store.dataset(row.dataset_id) if row.dataset_id else None
    rows = in_project(dataset.path, project_dir, ("datasets",)) / TRAIN_FILE if dataset is not None else None
    if rows is not None and rows.is_file():
        with open(rows, encoding="utf-8") as f:
            first = f.readline()
        return _tools_in_row(json.loads(first)) if first.strip() else []
    latest = store.traces(row.task_name, tier="teacher", limit=1)
    offered = (latest[0].tools or []) if latest else []
    return [ToolSpec.model_validate(t) for t in offered if t.get("name") != FINAL_TOOL]


def _tools_in_row(row: dict[str, Any]) -> list[ToolSpec]:
    """The tools a chat row's system turn lists (`chat_format.render_tools`: a header, then one JSON per line)."""
    from protege.agents.models.chat_format import TOOLS_HEADER

    first = (row.get("messages") or [{}])[0]
    system = (first.get("content") or "") if first.get("role") == "system" else ""
    _, header, listed = system.partition("\n\n" + TOOLS_HEADER)
    if not header:
        return []
    return [ToolSpec.model_validate(json.loads(line)) for line in listed.strip().splitlines() if line.strip()]


def _readable_like_the_rest(stage: Path) -> None:
    """Every exported file with the mode of a file written here the ordinary way: safetensors writes its weights
    0600 (owner only), so a server running as another user could read the Modelfile but not the weights."""
    mode = (stage / SERVING_FILE).stat().st_mode & 0o777
    for path in stage.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def _write(
    stage: Path, row: Any, task: Any, tools: list[ToolSpec], adapter: Path, base: Path, fmt: str, quant: str
) -> None:
    from protege.agents.models.chat_format import student_messages, trained_prompt

    # the system turn as it was trained: its style, and a tool task's tool list
    instructions = student_messages(task.instructions, {}, tools or None, trained_prompt(row.params))[0].content
    checkpoint = stage if fmt == "hf" else stage / ".merged"
    tokenizer = merge_student(base, adapter, checkpoint, half=quant == "f16")
    files = [p.name for p in sorted(checkpoint.iterdir()) if p.is_file()]
    quantized = None
    if fmt == "gguf":
        gguf_file, quantized = _write_gguf(checkpoint, stage, quant, name=served_name(row.task_name))
        shutil.rmtree(checkpoint)
        tokenizer.save_pretrained(stage)  # protege's llama.cpp engine renders prompts and forced text with it
        files = [p.name for p in sorted(stage.iterdir()) if p.is_file()] + [MODELFILE]
        prompt = serving_prompt(tokenizer, instructions)
        (stage / MODELFILE).write_text(
            modelfile(gguf_file.name, prompt, instructions, _stops(tokenizer)), encoding="utf-8"
        )
    if (adapter / PROFILE_FILE).is_file():  # the learned bounds and copy rules: the folder decodes as the student
        shutil.copy2(adapter / PROFILE_FILE, stage / PROFILE_FILE)
        files = sorted({*files, PROFILE_FILE})
    manifest = serving_manifest(row, task, tokenizer, instructions, tools, fmt=fmt, quant=quant, files=files)
    if quantized is not None:  # what llama.cpp's quantizer did, which its silenced log said
        manifest[QUANTIZATION_KEY] = {
            "tensors": quantized.tensors,
            "fallback_tensors": quantized.fallbacks,
            "fallback_types": list(quantized.fallback_types),
            "summary": quantized.summary(),
        }
    (stage / SERVING_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def merge_student(base: Path, adapter: Path, out: Path, *, half: bool = False) -> Any:
    """Base + LoRA adapter merged into plain weights at `out` (a fully fine-tuned student is saved as is)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.float32)
    if half:
        model = model.to(torch.float16)  # type: ignore[arg-type]  # transformers' stubs miss .to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return tokenizer


def _write_gguf(checkpoint: Path, stage: Path, quant: str, *, name: str) -> tuple[Path, Any]:
    """The GGUF file, and what llama.cpp's quantizer did (`gguf_write.Quantized`) where it made it."""
    from protege.distill.gguf_write import WRITABLE, quantize_gguf, write_gguf

    target = stage / f"student-{quant}.gguf"
    if quant in WRITABLE:
        return write_gguf(checkpoint, target, quant, name=name), None
    f16 = write_gguf(checkpoint, stage / ".student-f16.gguf", "f16", name=name)
    try:
        quantized = quantize_gguf(f16, target, quant)
        return quantized.path, quantized
    finally:
        f16.unlink(missing_ok=True)


def serving_prompt(tokenizer: Any, instructions: str) -> str:
    """The exact text the student reads, with INPUT_SLOT where the compact input JSON goes."""
    from protege.agents.models.chat_format import student_messages, to_chat_dicts

    messages = to_chat_dicts(student_messages(instructions, {}))
    messages[-1]["content"] = _USER_MARK
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text.replace(_USER_MARK, INPUT_SLOT)


def serving_manifest(
    row: Any,
    task: Any,
    tokenizer: Any,
    instructions: str,
    tools: list[ToolSpec] | None = None,
    *,
    fmt: str,
    quant: str,
    files: list[str],
) -> dict[str, Any]:
    """What a caller needs to reproduce a student call on another server (`instructions`: its system turn, the
    tool list included for a task with `tools`)."""
    from protege.agents.models.chat_format import student_messages, to_chat_dicts
    from protege.distill.gbnf import schema_to_gbnf

    messages = to_chat_dicts(student_messages(instructions, {}))
    messages[-1]["content"] = INPUT_SLOT
    schema = task.output_schema or {}
    grammar_tools: list[tuple[str, dict[str, Any] | None]] = [(t.name, t.parameters) for t in tools or []]
    return {
        "student_id": row.id,
        "task": row.task_name,
        "task_version": task.version,
        "base": row.base,
        "format": fmt,
        "quant": quant,
        "files": files,
        SERVED_NAME_KEY: served_name(row.task_name),
        "messages": messages,
        "prompt_template": serving_prompt(tokenizer, instructions),
        "prompt_notes": f"replace the last {INPUT_SLOT} with the call's input as compact JSON (separators ',' "
        f"and ':', no spaces, unicode kept); the answer is compact JSON of output_schema"
        + (", or one <tool_call>{...}</tool_call> of a listed tool (grammar_gbnf allows both)" if tools else ""),
        "output_schema": schema,
        "grammar_gbnf": schema_to_gbnf(schema, grammar_tools or None),
        "stop": _stops(tokenizer),
        "openai_request": openai_request(row, task, instructions, tools),
    }


def openai_request(row: Any, task: Any, instructions: str, tools: list[ToolSpec] | None) -> dict[str, Any]:
    """The body protege's student tier sends an OpenAI-compatible server (`HostedStudent.params`), with INPUT_SLOT
    for the input: the served name, greedy, logprobs with top_logprobs 1 (llama-cpp-python's server sends none
    without it), the task's max_tokens and the output schema."""
    from protege.agents.models.base import ModelRequest
    from protege.agents.models.chat_format import student_messages
    from protege.agents.models.hosted import HostedStudent
    from protege.tasks import Policy

    messages = student_messages(instructions, {})
    messages[-1] = messages[-1].model_copy(update={"content": INPUT_SLOT})
    max_tokens = (task.policy or {}).get("max_tokens") or Policy().max_tokens
    req = ModelRequest(messages=messages, tools=tools or [], output_schema=task.output_schema, max_tokens=max_tokens)
    server = "http://127.0.0.1:8000/v1"  # only its request body is used: nothing is sent
    return HostedStudent(served_name(row.task_name), student_id=row.id, base_url=server).params(req)


def modelfile(gguf_name: str, prompt: str, instructions: str, stops: list[str]) -> str:
    """An Ollama Modelfile whose template renders exactly the training prompt (system = the instructions)."""
    head, _, tail = prompt.rpartition(INPUT_SLOT)
    template = head.replace(instructions.strip(), "{{ .System }}", 1) + "{{ .Prompt }}" + tail
    lines = [
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{instructions.strip()}"""',
        "PARAMETER temperature 0",
        "PARAMETER num_ctx 4096",
    ]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    return "\n".join(lines) + "\n"


def _stops(tokenizer: Any) -> list[str]:
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        if name in tokenizer.get_vocab() and name not in stops:
            stops.append(name)
    return stops
