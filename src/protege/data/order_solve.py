"""The offline stand-in author's program for `extract_order` (`protege.demo.workload.order_program()`; the demo
and bench/sandbox.py hand it to `code_author`).

Written from the task's instructions, like a teacher would, for the fields rules can decide; it leaves out the
fields that need reading comprehension (product, quantity, delivery date, city), as the authoring prompt asks.
It is text, not imported: it runs only in the sandbox.
"""

import re

QUOTE_START = re.compile(r"^(-----Original Message-----|On .+ wrote:)\s*$", re.M)
ORDER_ID = re.compile(r"\b(?:ORD-?|order\s*(?:#|no\.?|number)\s*:?\s*)(\d{6})\b", re.I)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
HIGH = ("urgent", "asap", "as soon as possible", "rush", "time-sensitive", "time sensitive")
LOW = ("no rush", "no hurry", "not urgent")


def new_message(body):
    """The new message only: quoted lines and everything after a reply header are earlier mail."""
    match = QUOTE_START.search(body)
    text = body[: match.start()] if match else body
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


def form_field(text, name):
    match = re.search(rf"^{name}:[ \t]*(.*)$", text, flags=re.M)
    return match.group(1).strip() if match else None


def sender_parts(sender):
    match = re.match(r"\s*\"?([^\"<]*?)\"?\s*<([^>]+)>", sender)
    if match:
        return match.group(1).strip() or None, match.group(2).strip()
    return None, sender.strip()


def urgency(text):
    lowered = text.lower()
    if any(phrase in lowered for phrase in LOW):
        return "low"
    return "high" if any(phrase in lowered for phrase in HIGH) else "normal"


def contact(text, sender_address, is_form):
    if is_form:
        return form_field(text, "Email") or None
    asked = re.search(
        r"(?:reply to|contact me at|reach me at|write to|email me at)\s+(" + EMAIL.pattern + ")", text, flags=re.I
    )
    return asked.group(1).rstrip(".") if asked else sender_address


def solve(email):
    text = new_message(email["body"])
    name, address = sender_parts(email["sender"])
    is_form = address.lower().startswith("no-reply@")
    order = ORDER_ID.search(text) or ORDER_ID.search(email["subject"])
    return {
        "order_id": f"ORD-{order.group(1)}" if order else None,
        "contact_email": contact(text, address, is_form),
        "urgency": urgency(text),
    }
