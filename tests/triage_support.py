"""The support-ticket triage task that the cascade and app tests call (DESIGN §3's example)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Ticket(BaseModel):
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int
