"""Conversations → token ids and labels for training: the loss is on assistant turns only, and a batch's shared
prompt prefix (the task's instructions) is found so the trainer can run it once (train.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from protege.agents.models.chat_render import render_chat
from protege.errors import UserError


class TokenizedExample(BaseModel):
    """One training sequence: token ids and labels (-100 where no loss: prompts, tool results)."""

    input_ids: list[int]
    labels: list[int]


def check_rows(rows: Sequence[dict[str, Any]], what: str) -> None:
    """Rows must be TRL conversational rows whose last turn is the assistant's answer."""
    if not rows:
        raise UserError(f"{what} is empty; build a dataset of validated traces first (`protege dataset build`)")
    for i, row in enumerate(rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or not isinstance(messages, list):
            raise UserError(f"{what}[{i}] has no 'messages' list: {str(row)[:200]!r}")
        if messages[-1].get("role") != "assistant":
            raise UserError(f"{what}[{i}] does not end with an assistant turn (its answer): {messages[-1]!r}")


def tokenize_row(tokenizer, messages: list[dict[str, str]]) -> TokenizedExample:
    """One sequence per conversation, with loss on every assistant turn (tool calls and the final answer)."""
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    ids = render_chat(tokenizer, messages, generation_prompt=False)
    labels = [-100] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render_chat(tokenizer, messages[:i], generation_prompt=True))
        upto = render_chat(tokenizer, messages[: i + 1], generation_prompt=False)
        if ids[: len(upto)] != upto or start > len(upto):
            raise UserError(
                "the base's chat template renders a conversation prefix differently from the whole; "
                "use a base whose template appends turns (ChatML and most instruct models do)"
            )
        labels[start : len(upto)] = upto[start:]
    return TokenizedExample(input_ids=ids, labels=labels)


def tokenize_rows(tokenizer, rows, max_length: int) -> tuple[list[TokenizedExample], int]:
    """Tokenized rows and how many were skipped for being longer than `max_length` (a cut answer teaches nothing)."""
    examples = [tokenize_row(tokenizer, row["messages"]) for row in rows]
    kept = [e for e in examples if len(e.input_ids) <= max_length]
    return kept, len(examples) - len(kept)


def shared_prefix_len(input_ids, labels) -> int:
    """Length of the token prefix every row of a batch shares and none is trained on (labels start after it)."""
    import torch

    same = (input_ids == input_ids[:1]).all(dim=0)
    differs = (~same).nonzero()
    common = int(differs[0]) if len(differs) else input_ids.shape[1]
    labelled = (labels != -100).any(dim=0).nonzero()
    first_label = int(labelled[0]) if len(labelled) else input_ids.shape[1]
    return max(0, min(common, first_label - 1, input_ids.shape[1] - 1)) if torch.is_tensor(input_ids) else 0
