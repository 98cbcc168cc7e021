"""The support-ticket triage task that the cascade and app tests call (DESIGN §3's example)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# ticket subjects with an obvious queue, for tests that train a tiny student or run a short stream
SUBJECTS = [
    "refund please",
    "app crashes",
    "double charge",
    "login broken",
    "refund my order",
    "screen is blank",
    "charged twice",
    "error 500",
    "refund for May",
    "crash on save",
    "invoice wrong",
    "button missing",
]


class Ticket(BaseModel):
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int
