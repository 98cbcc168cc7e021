"""Generate order emails that list several items in prose (seeded): the hard case for field programs.

    python bench/workloads/make_prose_orders.py --n 600 --out /tmp/prose-orders.jsonl

Items are written inside a sentence (`I want to place an order for 6 x Laser Printer, seven Desk Lamps and 2x USB
Hub`), in several phrasings, with number words; five output fields: customer_name, products, quantities,
item_count (never written), po_number (null when absent).
"""

from __future__ import annotations

import random

PRODUCTS = [
    "Laser Printer LX-500",
    "Silent Mouse M220",
    "Water Filter Jug",
    "ErgoChair Pro",
    "Privacy Screen 24",
    "Desk Lamp",
    "USB Hub 7-Port",
    "Whiteboard 90x60",
    "Label Tape 12mm",
    "Monitor Arm",
]
NAMES = ["Sara Laurent", "Liam Moreno", "Lucia Garcia", "Noah Rahman", "Ingrid Holm", "Kenji Sato", "Ana Lima"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def _item(q: int, product: str, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.4:
        return f"{q} x {product}"
    if style < 0.7:
        return f"{q}x {product}"
    return f"{WORDS[q] if q < len(WORDS) else q} {product}"


def one(rng: random.Random) -> dict:
    k = rng.randint(1, 4)
    products = rng.sample(PRODUCTS, k)
    qty = [rng.randint(1, 12) for _ in products]
    parts = [_item(q, p, rng) for q, p in zip(qty, products)]
    listed = parts[0] if k == 1 else ", ".join(parts[:-1]) + rng.choice([" and ", ", and ", " & "]) + parts[-1]
    name = rng.choice(NAMES)
    ask = rng.choice(
        [
            f"I want to place an order for {listed}.",
            f"Please send {listed} to our office.",
            f"Looking to buy {listed} - can you put an order in?",
            f"We'd like to order {listed}.",
        ]
    )
    po = rng.choice([None, None, rng.randint(10000, 99999)])
    filler = rng.choice(
        [
            "We're a team of 269 people now.",
            "Thanks for the quick help last time.",
            "",
            "Happy to answer any questions.",
        ]
    )
    po_text = f" Please reference PO {po} on the invoice." if po else ""
    body = (
        f"{rng.choice(['Hi,', 'Hello Victor,', 'Dear Northwind team,'])}\n\n{ask}{po_text} {filler}\n\n"
        f"{rng.choice(['Thanks,', 'Best regards,', 'Cheers,'])}\n{name}"
    )
    return {
        "input": {"email": {"subject": rng.choice(["Order", "order pls", "New order"]), "body": body}},
        "output": {"customer_name": name, "products": products, "quantities": qty, "item_count": k, "po_number": po},
    }


def generate(n: int, seed: int = 21) -> list[dict]:
    rng = random.Random(seed)
    return [one(rng) for _ in range(n)]


if __name__ == "__main__":
    from jsonl_cli import write_jsonl_main

    write_jsonl_main(generate, __doc__, seed=21)
