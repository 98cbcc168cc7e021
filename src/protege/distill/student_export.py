"""Export a student to where people serve models: a plain checkpoint, or a GGUF with an Ollama Modelfile.

`export_student(...)` writes one new folder:
    --format hf     the adapter merged into its base: config.json, model.safetensors, tokenizer with its chat
                    template (loads in transformers, vLLM, TGI, and llama.cpp's own converter)
    --format gguf   student-<quant>.gguf (llama.cpp, Ollama, LM Studio), an Ollama `Modelfile`, and the tokenizer
                    files (protege's llama.cpp engine renders prompts with them)
and, in both, the student's answer profile (`protege_answers.json`: the bounds and copy rules learned from its
traces, so `LocalModel(folder)` decodes as the student does) and `protege_serving.json`: what a server-side caller
needs to reproduce a call exactly — the messages and the rendered prompt template (with the task's instructions),
the output JSON schema, its GBNF grammar, the stop strings, and an OpenAI-style request body. The student's files
are checked against the hash recorded when it was trained, so an altered adapter is never exported as that student.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protege.agents.models.answer_profile import PROFILE_FILE
from protege.distill.export import atomic_dir
from protege.errors import UserError

SERVING_FILE = "protege_serving.json"
QUANTIZATION_KEY = "quantization"  # in SERVING_FILE, where llama.cpp's quantizer made the GGUF
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
    with atomic_dir(out, what="output folder", advice="export into a new folder (or remove it)") as stage:
        _write(stage, row, task, adapter, base_dir(row.base), fmt, quant)
    return out


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


def _write(stage: Path, row: Any, task: Any, adapter: Path, base: Path, fmt: str, quant: str) -> None:
    from protege.agents.models.chat_format import student_system, trained_prompt

    instructions = student_system(task.instructions.strip(), trained_prompt(row.params))  # as it was trained
    checkpoint = stage if fmt == "hf" else stage / ".merged"
    tokenizer = merge_student(base, adapter, checkpoint, half=quant == "f16")
    files = [p.name for p in sorted(checkpoint.iterdir()) if p.is_file()]
    quantized = None
    if fmt == "gguf":
        gguf_file, quantized = _write_gguf(checkpoint, stage, quant, name=f"protege-{row.task_name}")
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
    manifest = serving_manifest(row, task, tokenizer, instructions, fmt=fmt, quant=quant, files=files)
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
    row: Any, task: Any, tokenizer: Any, instructions: str, *, fmt: str, quant: str, files: list[str]
) -> dict[str, Any]:
    """What a caller needs to reproduce a student call on another server (`instructions`: its system turn)."""
    from protege.agents.models.chat_format import student_messages, to_chat_dicts
    from protege.distill.gbnf import schema_to_gbnf

    messages = to_chat_dicts(student_messages(instructions, {}))
    messages[-1]["content"] = INPUT_SLOT
    schema = task.output_schema or {}
    return {
        "student_id": row.id,
        "task": row.task_name,
        "task_version": task.version,
        "base": row.base,
        "format": fmt,
        "quant": quant,
        "files": files,
        "messages": messages,
        "prompt_template": serving_prompt(tokenizer, instructions),
        "prompt_notes": f"replace the last {INPUT_SLOT} with the call's input as compact JSON (separators ',' "
        f"and ':', no spaces, unicode kept); the answer is compact JSON of output_schema",
        "output_schema": schema,
        "grammar_gbnf": schema_to_gbnf(schema),
        "stop": _stops(tokenizer),
        "openai_request": {
            "model": f"protege-{row.task_name}",
            "messages": messages,
            "temperature": 0,
            "logprobs": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "final_answer", "schema": schema, "strict": False},
            },
        },
    }


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
