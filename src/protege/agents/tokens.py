"""Token counts without a tokenizer download: an estimate, not an exact count.

Claude's tokenizer is not public and tiktoken fetches its vocabularies from the network, so protege estimates.
`count_tokens` mimics how byte-pair tokenizers cut text: a regex pre-tokenizer splits it into words (camelCase
parts apart), digit groups of up to three, punctuation runs and line breaks; a short common word is one token,
a long word costs one more token for every few extra letters, punctuation merges in pairs, and non-Latin
scripts cost more per character. Calibrated against a real BPE tokenizer (SmolLM2's 49k vocabulary): on
400 Debian package descriptions, 200 JSON records and this project's design notes the totals land within 3%
(per text, 90% of estimates within -9%/+14%), at ~3.8–4.1 characters per token on English; code runs ~9% high,
non-English text low. Claude's own tokenizer differs, so real Claude counts may be further off. Use it for
cost *estimates* (ReferenceModel, the fake provider's default usage), and for billing only where a provider's
answer came without its own counts (`estimate_usage`): real providers report them in `Usage`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from protege.agents.models.base import ModelRequest, ToolCall, Usage

# One alternative per kind of piece; the order matters (first match wins at each position).
_PIECES = re.compile(
    r"""
      (?P<word>[A-Z]?[a-z]+|[A-Z]+(?![a-z]))        # ASCII word, camelCase split at the capitals
    | (?P<digits>\d{1,3})                          # numbers cut in groups of three digits
    | (?P<cjk>[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])  # CJK: about a token per character
    | (?P<other>[^\W\d_]+)                         # other letters (accents, Cyrillic, ...)
    | (?P<newlines>\n+|[ \t]{2,})                  # line breaks and indentation runs
    | (?P<punct>[^\w\s]+|_+)                       # punctuation runs: '":"' or '},{' merge in BPE
    """,
    re.VERBOSE,
)

SHORT_WORD = 7
"""ASCII words up to this many letters are usually one token."""

LETTERS_PER_EXTRA_TOKEN = 4
"""Past SHORT_WORD letters, each this many more letters cost about one more token."""

MESSAGE_OVERHEAD = 4
"""Tokens a chat API spends per message on role markers and separators (an estimate)."""


def count_tokens(text: str) -> int:
    """Estimated number of tokens in `text` (see the module docstring: an estimate, not an exact count)."""
    if not text:
        return 0
    total = 0
    for m in _PIECES.finditer(text):
        kind, piece = m.lastgroup, m.group()
        if kind == "word":
            total += 1 + max(0, math.ceil((len(piece) - SHORT_WORD) / LETTERS_PER_EXTRA_TOKEN))
        elif kind == "other":
            total += math.ceil(len(piece) / 2)
        elif kind == "punct":
            total += math.ceil(len(piece) / 2)
        else:  # digits, cjk, newlines
            total += 1 if kind != "cjk" else len(piece)
    return total


def count_json_tokens(obj: Any) -> int:
    """Estimated tokens of an object serialised the way it is sent (JSON)."""
    return count_tokens(json.dumps(obj, ensure_ascii=False))


def prompt_tokens(req: ModelRequest) -> int:
    """Estimated input tokens of a request: every message, its tool calls, the tool specs and the schema."""
    total = 0
    for message in req.messages:
        total += MESSAGE_OVERHEAD + count_tokens(message.content)
        for call in message.tool_calls:
            total += count_tokens(call.name) + count_json_tokens(call.arguments)
    for tool in req.tools:
        total += count_json_tokens(tool.model_dump())
    if req.output_schema is not None:
        total += count_json_tokens(req.output_schema)
    return total


def estimate_usage(req: ModelRequest, reply: str, calls: list[ToolCall] | None = None) -> Usage:
    """Usage estimated from the request and the reply (its text and tool calls): for an answer whose provider
    reported none. The provider bills it all the same, so it is charged, never counted as free."""
    output = count_tokens(reply) + sum(count_tokens(c.name) + count_json_tokens(c.arguments) for c in calls or [])
    return Usage(input_tokens=prompt_tokens(req), output_tokens=output)
