"""Chat messages as token ids in the base model's chat template: the one rendering that training (distill.train,
distill.sft_rows) and serving (the torch and llama.cpp engines) share, so a student sees at serving time exactly
the prompts it was trained on."""

from __future__ import annotations

from typing import Any


def render_chat(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    """Token ids of `messages` in the base's chat template: the one rendering used in training and serving."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids
