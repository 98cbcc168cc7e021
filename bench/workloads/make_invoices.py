"""Generate a count-heavy extraction workload: supplier invoice emails with a list of line items (seeded).

    python bench/workloads/make_invoices.py --n 600 --out /tmp/invoices.jsonl

Eight output fields: invoice_id, vendor, customer_email, overdue (yes/no), currency, item_count (the number of
item lines: the input never spells it out), skus (the item codes, in order), total (a number). Layouts vary
(bulleted, numbered, a table with a header row, a notes section that sometimes mentions codes that are not
items), so a program has to find the structure rather than a fixed offset.
"""

from __future__ import annotations

import random

VENDORS = [
    "Acme Tools Ltd",
    "Borealis Paper Co",
    "Cobalt Networks",
    "Delta Office GmbH",
    "Eastwind Foods",
    "Fjord Logistics AS",
    "Granite Hardware",
    "Helios Lighting",
    "Iris Medical Supply",
    "Juniper Textiles",
]
PRODUCTS = [
    "stapler",
    "copy paper A4",
    "toner cartridge",
    "desk lamp",
    "USB-C cable",
    "whiteboard marker",
    "office chair",
    "monitor arm",
    "label tape",
    "paper shredder",
    "ergonomic mouse",
    "file folder",
    "laser pointer",
    "headset",
    "webcam",
    "power strip",
]
CUSTOMERS = ["ana", "ben.k", "carla", "d.osei", "emil", "fatima.r", "gus", "hana", "ivan.p", "jo"]
DOMAINS = ["example.org", "riverside.edu", "mail.example.com", "northwind.test"]
CURRENCIES = ["EUR", "USD", "GBP", "NOK"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def one(rng: random.Random) -> dict:
    vendor, currency = rng.choice(VENDORS), rng.choice(CURRENCIES)
    inv = f"INV-{rng.randint(1000, 99999)}"
    email = f"{rng.choice(CUSTOMERS)}@{rng.choice(DOMAINS)}"
    day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.choice([2024, 2025])
    issued = rng.choice([f"{day} {month} {year}", f"{month} {day}, {year}"])
    n = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 11])
    items = []
    for _ in range(n):
        sku = f"SKU{rng.randint(100, 9999)}"
        qty, price = rng.randint(1, 20), rng.randint(100, 20000) / 100
        items.append((sku, rng.choice(PRODUCTS), qty, price))
    total = round(sum(q * p for _, _, q, p in items), 2)
    style = rng.choice(["bullet", "numbered", "table"])
    lines = ["| code | item | qty | price |"] if style == "table" and items else []
    for k, (sku, name, qty, price) in enumerate(items, 1):
        if style == "bullet":
            lines.append(f"  - {sku} {name} x{qty} @ {price:.2f}")
        elif style == "numbered":
            lines.append(f"{k}. {sku}: {qty} x {name}, {price:.2f} each")
        else:
            lines.append(f"| {sku} | {name} | {qty} | {price:.2f} |")
    notes = rng.choice(
        [
            "",
            "Note: SKU1234 is back-ordered and was not shipped.",
            "Thanks for your business!",
            "- payment within 30 days",
            "Questions? Reply to this email.",
        ]
    )
    greeting = rng.choice(["Hello,", "Dear customer,", "Hi there,"])
    overdue = rng.random() < 0.3
    reminder = "Reminder: this invoice is OVERDUE.\n" if overdue else ""
    items_text = "\n".join(lines) if lines else "(no billable items this period)"
    body = (
        f"{greeting}\n\nPlease find invoice {inv} from {vendor} below.\nIssued: {issued}\n"
        f"Bill to: {email}\n{reminder}\nItems:\n{items_text}\n\nTotal due: {total:.2f} {currency}\n\n{notes}\n"
        f"-- \n{vendor} accounts team"
    )
    subject = rng.choice([f"Invoice {inv}", f"Your invoice {inv} from {vendor}", f"{vendor}: invoice {inv}"])
    return {
        "input": {"subject": subject, "body": body},
        "output": {
            "invoice_id": inv,
            "vendor": vendor,
            "customer_email": email,
            "overdue": overdue,
            "currency": currency,
            "item_count": n,
            "skus": [s for s, *_ in items],
            "total": total,
        },
    }


def generate(n: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    return [one(rng) for _ in range(n)]


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=5)
