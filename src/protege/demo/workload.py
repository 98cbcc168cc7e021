"""The bundled example workload: customer order emails -> an 8-field order record (DESIGN §9).

1,200 labelled emails to a sales inbox (new orders, changes, follow-ups) with real variety: many phrasings,
typos, signatures, quoted replies, spelled-out numbers, dates in many formats, distractor numbers, names,
cities and addresses, missing fields. Each has a reference answer that is right by construction
(bench/workloads/make_orders.py generates them, seeded). The first 900 are the `"pool"` (what the app sees
as traffic), the last 300 are `"heldout"` (never shown to the teacher; for evaluation).

Register it as a protege task::

    from protege.demo.workload import Email, Order, extract_order, load_examples
    task = app.task(extract_order)
    task(Email(**load_examples("heldout")[0]["input"]["email"]))
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, Field

from protege.errors import UserError

DATA_FILE = "orders.jsonl.gz"
POOL_SIZE = 900
SPLITS = ("pool", "heldout")


class Email(BaseModel):
    """One email to the sales inbox, as received."""

    sender: str = Field(description="the From header, e.g. 'Maria Lopez <maria@lopez.example>'")
    date: str = Field(description="the Date header (RFC 2822), the reference for relative dates")
    subject: str
    body: str


class Order(BaseModel):
    """The order an email is about."""

    customer_name: str | None = Field(description="full name of the person the order is for; null if none given")
    order_id: str | None = Field(
        pattern=r"^ORD-[0-9]{6}$", description="existing order as 'ORD-' + 6 digits; null for a new order"
    )
    product: str = Field(description="product name exactly as written")
    quantity: int = Field(ge=1, description="units, as an integer (for a change: the new quantity)")
    deliver_by: str | None = Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="requested delivery date, YYYY-MM-DD; null if none"
    )
    city: str | None = Field(description="delivery city; null if not stated")
    contact_email: str | None = Field(description="address to contact the customer at")
    urgency: Literal["low", "normal", "high"]


def extract_order(email: Email) -> Order:  # type: ignore[empty-body]  # a task: the tiers answer, not this body
    """Extract the order a customer email to our sales inbox is about, as one record.

    Emails are new orders, changes to an existing order, or follow-ups on one. Read only the new message:
    ignore quoted earlier messages (lines starting with ">" and anything after "-----Original Message-----"
    or a line "On <date>, <someone> wrote:").
    - customer_name: full name of the person the order is for: the sender, or the person named when the
      email orders on someone else's behalf; use the fullest form of the name given in the header, the body,
      the signature or a form; null when no name is given.
    - order_id: the existing order's number as "ORD-" plus its 6 digits (it may be written ORD-123456,
      ORD123456, order #123456, order no. 123456 ...); null for a new order. Invoice, PO, ticket, quote and
      tracking numbers are not order ids.
    - product: the product name exactly as written (no quantity or unit words).
    - quantity: number of units as an integer ("two" -> 2, "a"/"an"/"a single" -> 1, "a dozen" -> 12,
      "half a dozen" -> 6, "two dozen" -> 24). For a change, the new quantity. Earlier orders don't count.
    - deliver_by: the date the customer wants delivery on or by, as YYYY-MM-DD. Dates with dots are
      day.month.year. A date without a year is its next occurrence on or after the email's Date header;
      "tomorrow" is the day after it and a weekday ("on Friday", "this Friday") is the first such day after
      it. Null when no delivery date is asked for; dates of past orders or earlier messages don't count.
    - city: the city the order is to be delivered to; null when not stated (a head-office or signature
      address is not a delivery city).
    - contact_email: the address the customer asks to be contacted at, otherwise the sender's address; for
      website-form emails (from no-reply@) the form's Email field, or null when it is empty.
    - urgency: "high" when the new message asks for speed (urgent, ASAP, as soon as possible, rush,
      time-sensitive); "low" when it says there is no rush / no hurry / not urgent; otherwise "normal".
    """


@lru_cache(maxsize=1)
def _all_examples() -> tuple[str, ...]:
    raw = resources.files("protege").joinpath("data", DATA_FILE).read_bytes()
    return tuple(line for line in gzip.decompress(raw).decode("utf-8").splitlines() if line)


def load_examples(split: str | None = None) -> list[dict[str, Any]]:
    """The labelled examples as [{"input": {"email": {...}}, "output": {...}}], in a fixed order.

    `split`: None for all 1,200, "pool" for the first 900, "heldout" for the last 300. Each call returns
    fresh dicts, so callers may mutate them.
    """
    if split not in (None, *SPLITS):
        raise UserError(f"unknown split {split!r}; use None, 'pool' or 'heldout'")
    lines = _all_examples()
    if split == "pool":
        lines = lines[:POOL_SIZE]
    elif split == "heldout":
        lines = lines[POOL_SIZE:]
    return [json.loads(line) for line in lines]


def order_program() -> str:
    """Source of a `solve(email)` for `extract_order`, written from its instructions for the fields rules can
    decide (order_id, contact_email, urgency; the rest left out): what an offline `code_author` hands in."""
    return resources.files("protege").joinpath("data", "order_solve.py").read_text(encoding="utf-8")


__all__ = ["Email", "Order", "POOL_SIZE", "extract_order", "load_examples", "order_program"]
