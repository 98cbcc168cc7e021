"""Generate the bundled order-email workload (src/protege/data/orders.jsonl.gz), deterministically.

    python bench/workloads/make_orders.py            # rewrites the shipped file (1,200 examples, seed 7)
    python bench/workloads/make_orders.py --n 100000 --out /tmp/orders-100k.jsonl.gz

Each example is drawn as ground-truth facts first (customer, order id, product, quantity, delivery date,
city, contact address, urgency); the email is then rendered from those facts plus distractors that never
equal a fact, so the reference answer is right by construction. The rules the renderer follows are the ones
`protege.demo.workload.extract_order`'s docstring states.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path from tests
from order_vocab import (
    CITIES,
    CLOSINGS,
    COMPANIES,
    FILLERS,
    FIRST,
    GREETINGS,
    HIGH_CUES,
    LAST,
    LOW_CUES,
    MONTHS,
    PERSONAL_DOMAINS,
    PRODUCTS,
    REPS,
    TITLES,
    TYPO_WORDS,
    UNITS,
    WEEKDAYS,
)

SHOP = "Northwind Office Supply"
SHOP_SALES = "Northwind Sales <sales@northwind-supply.com>"
WEBFORM_SENDER = "Northwind Web Form <no-reply@northwind-supply.com>"
NUMBER_WORDS = list(
    "zero one two three four five six seven eight nine ten "
    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
)
DEFAULT_N, DEFAULT_SEED = 1200, 7
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "src" / "protege" / "data" / "orders.jsonl.gz"


@dataclass
class Facts:
    """The ground truth of one email, and who wrote it."""

    customer: str | None
    order_id: str | None
    product: str
    quantity: int
    deliver_by: date | None
    city: dict | None
    contact: str | None
    urgency: str
    received: datetime
    intent: str  # new | change | followup
    kind: str  # direct | behalf | shared | webform
    sender: str
    signer: str | None  # the name in the signature (may be first name only)


# -- small renderers ---------------------------------------------------------------------------------------------


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render_date(d: date, received: datetime, rng: random.Random) -> str:
    """A delivery date the way people write it; relative forms only where the rules make them exact."""
    delta = (d - received.date()).days
    forms = [
        d.isoformat(),
        f"{MONTHS[d.month - 1]} {d.day}",
        f"{MONTHS[d.month - 1]} {ordinal(d.day)}",
        f"{d.day} {MONTHS[d.month - 1]}",
        f"{ordinal(d.day)} {MONTHS[d.month - 1]}",
        f"{MONTHS[d.month - 1][:3]} {d.day}",
        f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
        f"{d.day} {MONTHS[d.month - 1]} {d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}",
        f"{WEEKDAYS[d.weekday()][:3]} {d.day} {MONTHS[d.month - 1][:3]}",
        f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}",
    ]
    if delta == 1:
        forms += ["tomorrow"] * 4
    if 2 <= delta <= 6:
        forms += [f"this {WEEKDAYS[d.weekday()]}", f"{WEEKDAYS[d.weekday()]}"] * 2
    return rng.choice(forms)


def qty_phrase(q: int, product: str, rng: random.Random) -> str:
    """Quantity + product: digits, words, dozens, units, 'x3' ..."""
    unit = rng.choice(UNITS)
    opts = [
        f"{q} {product}",
        f"{q} x {product}",
        f"{q}x {product}",
        f"{product} x{q}",
        f"{q} {unit} of {product}",
        f"{q} {product} {unit}",
    ]
    if q <= 20:
        w = NUMBER_WORDS[q]
        opts += [f"{w} {product}", f"{w} {unit} of {product}", f"{q} ({w}) {product}", f"{w} {product}"]
    if q == 1:
        art = "an" if product[0] in "AEIO" else "a"
        opts = [f"{art} {product}", f"a single {product}", f"one {product}", f"1 {product}", f"{art} {product}"]
    if q in (6, 12, 24):
        opts += [{6: "half a dozen", 12: "a dozen", 24: "two dozen"}[q] + f" {product}"] * 3
    return rng.choice(opts)


def order_ref(oid: str, rng: random.Random) -> str:
    digits = oid[4:]
    return rng.choice(
        [
            oid,
            f"order {oid}",
            f"order #{digits}",
            f"order no. {digits}",
            f"order number {digits}",
            f"ORD{digits}",
            f"order {digits}",
        ]
    )


def address_line(city: dict, rng: random.Random) -> str:
    street = f"{rng.randint(2, 980)} {rng.choice(city['streets'])}"
    if city["style"] == "us":
        return f"{street}, {city['name']}, {city['region']} {rng.randint(10000, 99899)}"
    if city["style"] == "uk":
        return f"{street}, {city['name']} {city['region']}"
    return f"{rng.choice(city['streets'])} {rng.randint(1, 140)}, {rng.randint(1000, 98999)} {city['name']}"


def typo(text: str, rng: random.Random) -> str:
    """Misspell one common word (filler text only: never inside a fact)."""
    words = [w for w in TYPO_WORDS if f" {w} " in f" {text} "]
    if not words:
        return text
    w = rng.choice(words)
    i = rng.randrange(len(w) - 1)
    bad = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    return f" {text} ".replace(f" {w} ", f" {bad} ", 1)[1:-1]


# -- facts -------------------------------------------------------------------------------------------------------


def draw_facts(rng: random.Random) -> Facts:
    received = datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=rng.choice([-8, -5, 0, 1, 2]))))
    received += timedelta(days=rng.randrange(700), minutes=rng.randrange(7 * 60, 20 * 60))
    first, last = rng.choice(FIRST), rng.choice(LAST)
    full = f"{first} {last}"
    company = rng.choice(COMPANIES) if rng.random() < 0.6 else None
    addr = _person_address(first, last, company, rng)
    kind = rng.choices(["direct", "behalf", "shared", "webform"], [70, 10, 10, 10])[0]
    customer, signer, sender, contact = full, full, f"{full} <{addr}>", addr
    if kind == "direct":
        if rng.random() < 0.35:
            signer = first  # the header carries the full name
        if rng.random() < 0.12:
            sender = addr
            customer = signer = rng.choice([full, full, first])
    elif kind == "behalf":
        a_first, a_last = rng.choice(FIRST), rng.choice(LAST)
        a_addr = _person_address(a_first, a_last, company, rng)
        sender, signer, contact = f"{a_first} {a_last} <{a_addr}>", f"{a_first} {a_last}", a_addr
    elif kind == "shared":
        box = f"{rng.choice(['purchasing', 'orders', 'office', 'admin', 'procurement'])}@{(company or COMPANIES[0])[1]}"
        sender, contact = rng.choice([box, f"{box.split('@')[0].title()} <{box}>"]), box
        if rng.random() < 0.2:
            customer = signer = None
    else:
        sender = WEBFORM_SENDER
        signer = None
        if rng.random() < 0.15:
            customer = None
        contact = addr if rng.random() < 0.85 else None
    if kind in ("direct", "shared") and customer and rng.random() < 0.15:
        contact = _person_address(first, last, None, rng, avoid=addr)  # "please reply to ..."
    intent = rng.choices(["new", "change", "followup"], [55, 25, 20])[0]
    urgency = rng.choices(["high", "normal", "low"], [25, 60, 15])[0]
    soonest = 14 if urgency == "low" else 1  # "no rush" next to "needed tomorrow" would contradict itself
    q = rng.choices(
        [rng.randint(1, 12), rng.randint(13, 20), rng.choice([6, 12, 24]), rng.choice([25, 30, 40, 50, 100])],
        [60, 15, 15, 10],
    )[0]
    return Facts(
        customer=customer,
        order_id=None if intent == "new" else f"ORD-{rng.randint(100000, 999999)}",
        product=rng.choice(PRODUCTS),
        quantity=q,
        deliver_by=(received.date() + timedelta(days=rng.randint(soonest, 75))) if rng.random() < 0.72 else None,
        city=rng.choice(CITIES) if rng.random() < 0.68 else None,
        contact=contact,
        urgency=urgency,
        received=received,
        intent=intent,
        kind=kind,
        sender=sender,
        signer=signer,
    )


def _person_address(first: str, last: str, company: tuple | None, rng: random.Random, avoid: str = "") -> str:
    f, surname = first.lower(), last.lower().replace(" ", "").replace("'", "")
    for _ in range(10):
        local = rng.choice(
            [
                f"{f}.{surname}",
                f"{f[0]}{surname}",
                f"{f}",
                f"{f}_{surname}",
                f"{surname}.{f}",
                f"{f}{rng.randint(1, 99)}",
            ]
        )
        domain = company[1] if company else rng.choice(PERSONAL_DOMAINS)
        if company and rng.random() < 0.3:
            domain = rng.choice(PERSONAL_DOMAINS)
        if f"{local}@{domain}" != avoid:
            return f"{local}@{domain}"
    return f"{f}.{surname}.{rng.randint(100, 999)}@{rng.choice(PERSONAL_DOMAINS)}"


# -- the email ---------------------------------------------------------------------------------------------------


def main_request(f: Facts, rng: random.Random, bullets: bool) -> list[str]:
    """The sentence(s) that say what is ordered and which order it is."""
    qp = qty_phrase(f.quantity, f.product, rng)
    if bullets:
        lines = [
            f"- {rng.choice(['Product', 'Item', 'Article'])}: {f.product}",
            f"- {rng.choice(['Qty', 'Quantity', 'Units', 'Amount'])}: {_qty_plain(f.quantity, rng)}",
        ]
        lead = {
            "new": "Here's what we need:",
            "change": f"Updated details for {order_ref(f.order_id or '', rng)}:",
            "followup": f"Checking on {order_ref(f.order_id or '', rng)}, which was:",
        }[f.intent]
        return [lead + "\n" + "\n".join(lines)]
    if f.intent == "new":
        return [
            rng.choice(
                [
                    f"We'd like to order {qp}.",
                    f"Could you send us {qp}?",
                    f"I need {qp} for our new office.",
                    f"Looking to buy {qp} - can you put an order in?",
                    f"Please put me down for {qp}.",
                    f"I want to place an order for {qp}.",
                    f"Can I order {qp}?",
                    f"please order {qp} for us.",
                ]
            )
        ]
    ref = order_ref(f.order_id or "", rng)
    old = _other_qty(f.quantity, rng)
    if f.intent == "change":
        return [
            rng.choice(
                [
                    f"Please change the quantity on {ref} ({f.product}) from {old} to {f.quantity}.",
                    f"Can we bump {ref} up to {qp}?",
                    f"For {ref}, we now need {qp} instead of {old}.",
                    f"We need to amend {ref}: make it {qp} (not {old}).",
                    f"Small change to {ref} - {qp} please, we over-estimated when we asked for {old}."
                    if old > f.quantity
                    else f"Small change to {ref} - {qp} please, {old} won't be enough.",
                ]
            )
        ]
    return [
        rng.choice(
            [
                f"Just checking on {ref} - {qp}. Has it shipped?",
                f"I haven't received my {ref} for {qp} yet.",
                f"Any update on {ref}? It was for {qp}.",
                f"What's the status of {ref} ({qp})?",
            ]
        )
    ]


def _qty_plain(q: int, rng: random.Random) -> str:
    return rng.choice([str(q), str(q), NUMBER_WORDS[q] if q <= 20 else str(q)])


def _other_qty(q: int, rng: random.Random) -> int:
    return rng.choice([n for n in range(1, 31) if n != q])


def fact_sentences(f: Facts, rng: random.Random, bullets: bool) -> list[str]:
    out = []
    if f.deliver_by:
        d = render_date(f.deliver_by, f.received, rng)
        if bullets:
            out.append(f"- {rng.choice(['Needed by', 'Deliver by', 'Delivery date', 'Required by'])}: {d}")
        else:
            on = d if d == "tomorrow" or d.startswith("this ") else f"on {d}"
            out.append(
                rng.choice(
                    [
                        f"We need them by {d}.",
                        f"Delivery {on} would be ideal.",
                        f"Needed by {d}.",
                        f"Please make sure it arrives no later than {d}.",
                        f"Can you deliver {on}?",
                        f"We need everything delivered by {d}.",
                        f"Could it arrive {on}?",
                    ]
                )
            )
    if f.city:
        if bullets:
            out.append(f"- {rng.choice(['Ship to', 'Delivery address', 'Deliver to'])}: {address_line(f.city, rng)}")
        else:
            name = f.city["name"]
            out.append(
                rng.choice(
                    [
                        f"Please ship to our {name} office.",
                        f"They're for our team in {name}.",
                        f"Delivery address: {address_line(f.city, rng)}",
                        f"Deliver to {name}, please.",
                        f"Ship to: {address_line(f.city, rng)}",
                        f"It all goes to the {name} site.",
                    ]
                )
            )
    if f.urgency != "normal":
        out.append(rng.choice(HIGH_CUES if f.urgency == "high" else LOW_CUES))
    sender_addr = f.sender.split("<")[-1].rstrip(">")
    if f.contact and f.contact != sender_addr:
        out.append(
            rng.choice(
                [
                    f"Please reply to {f.contact}.",
                    f"You can reach me at {f.contact}.",
                    f"Send the confirmation to {f.contact}, that's my work address.",
                    f"Best to contact me at {f.contact} - I don't check this inbox.",
                ]
            )
        )
    return out


def distractors(f: Facts, rng: random.Random) -> list[str]:
    """Sentences with numbers, names, dates, cities and addresses that are not the facts."""
    other_city = rng.choice([c for c in CITIES if c is not f.city])
    past = f.received.date() - timedelta(days=rng.randint(10, 200))
    pool = [
        f"Last time we ordered {_other_qty(f.quantity, rng)} and they went fast.",
        f"Your website lists them at ${rng.randint(9, 900)}.{rng.choice(['00', '49', '99'])}.",
        f"{rng.choice(REPS)} from your team was very helpful last time.",
        f"Please reference PO {rng.randint(1000, 99999)} on the invoice.",
        f"Invoice INV-{f.received.year}-{rng.randint(100, 9999):04d} is already paid.",
        f"We placed our previous order on {MONTHS[past.month - 1]} {past.day}.",
        f"Our head office is in {other_city['name']}, but that's not where these go."
        if f.city
        else f"Our head office is in {other_city['name']}.",
        f"Invoices should go to accounts@{rng.choice(COMPANIES)[1]}.",
        f"We're a team of {rng.randint(5, 300)} people now.",
    ]
    if f.kind != "behalf":  # "my colleague X" would blur who the order is for
        pool.append(f"My colleague {rng.choice(FIRST)} will be around if I'm out.")
    if f.intent == "followup":
        tracking = f"1Z{rng.randint(10**9, 10**10 - 1)}{rng.randint(10**5, 10**6 - 1)}"
        pool.append(f"The tracking number {tracking} doesn't work.")
    return rng.sample(pool, k=rng.choices([0, 1, 2, 3], [25, 35, 25, 15])[0])


def signature(f: Facts, rng: random.Random) -> str:
    lines = [rng.choice(CLOSINGS)] if rng.random() < 0.9 else []
    if f.signer:
        lines.append(f.signer)
        if rng.random() < 0.4:
            lines.append(rng.choice(TITLES))
        if rng.random() < 0.3:
            lines.append(
                rng.choice(["+1 (415) 555-0", "+44 20 7946 0", "Tel. 030 12345", "Mobile: 617-555-0"])
                + f"{rng.randint(100, 999)}"
            )
        if rng.random() < 0.1:
            lines.append(address_line(rng.choice([c for c in CITIES if c is not f.city]), rng))
    if rng.random() < 0.08:
        lines.append("Sent from my iPhone")
    return "\n".join(lines)


def quoted_reply(f: Facts, rng: random.Random) -> str:
    """An earlier message from the shop, full of numbers that must be ignored."""
    same = f.intent != "new" and rng.random() < 0.5
    oid = f.order_id if same and f.order_id else f"ORD-{rng.randint(100000, 999999)}"
    prod = f.product if same else rng.choice(PRODUCTS)
    prev = f.received - timedelta(days=rng.randint(2, 30), hours=rng.randint(0, 8))
    ship = prev.date() + timedelta(days=rng.randint(2, 9))
    greet = (f.signer or "there").split()[0]
    text = [
        f"Hi {greet},",
        f"Thanks for your order {oid} ({_other_qty(f.quantity, rng)} x {prod}).",
        f"It should arrive on {MONTHS[ship.month - 1]} {ship.day}.",
        rng.choice(["Urgent items ship first.", ""]),
        "Best,",
        rng.choice(REPS),
    ]
    text = [t for t in text if t]
    if rng.random() < 0.6:
        head = f"On {format_datetime(prev)[:-6]}, {SHOP_SALES} wrote:"
        return head + "\n" + "\n".join("> " + t for t in text)
    return (
        "-----Original Message-----\nFrom: "
        + SHOP_SALES
        + "\nSent: "
        + format_datetime(prev)
        + f"\nSubject: Order confirmation {oid}\n\n"
        + "\n".join(text)
    )


def subject(f: Facts, rng: random.Random, quoted: bool) -> str:
    ref = f.order_id or ""
    base = {
        "new": [
            "Order request",
            f"New order: {f.product}",
            f"{f.product}",
            "Order",
            "Purchase request",
            f"Quote for {f.product}?",
            "order pls",
            f"Purchase order {rng.randint(1000, 99999)}",
        ],
        "change": [
            f"Change to {ref}",
            "Update order",
            f"Re: Your order {ref}",
            f"{ref} - quantity change",
            "Change request",
        ],
        "followup": [
            "Where is my order?",
            f"Re: Order confirmation {ref}",
            f"Status of {ref}",
            "Delivery question",
            f"[Ticket #{rng.randint(10000, 99999)}] order status",
        ],
    }[f.intent]
    s = rng.choice(base)
    if quoted and not s.startswith("Re:"):
        s = "Re: " + s
    if f.urgency == "high" and rng.random() < 0.4:
        s = rng.choice(["URGENT: ", "Urgent - ", "ASAP: "]) + s
    return s


def render_email(f: Facts, rng: random.Random) -> dict:
    if f.kind == "webform":
        return {
            "sender": f.sender,
            "date": format_datetime(f.received),
            "subject": "New website order request",
            "body": webform_body(f, rng),
        }
    bullets = rng.random() < 0.15
    request = main_request(f, rng, bullets)
    facts = fact_sentences(f, rng, bullets)
    bullet_facts = [s for s in facts if s.startswith("- ")]
    prose = [typo(s, rng) if rng.random() < 0.1 else s for s in facts if not s.startswith("- ")]
    prose += distractors(f, rng)
    fillers = [typo(s, rng) if rng.random() < 0.25 else s for s in rng.sample(FILLERS, k=rng.randint(0, 2))]
    if f.kind == "behalf":
        request.insert(
            0,
            rng.choice(
                [
                    f"I'm writing on behalf of {f.customer}.",
                    f"This order is for my manager, {f.customer}.",
                    f"Ordering for my colleague {f.customer}, who is travelling.",
                ]
            ),
        )
    if request and bullet_facts:
        request[-1] += "\n" + "\n".join(bullet_facts)
    rng.shuffle(prose)
    mid = request + prose if rng.random() < 0.75 else prose[:1] + request + prose[1:]
    greeting = rng.choice(GREETINGS).replace("{rep}", rng.choice(REPS).split()[0])
    paras = [p for p in [greeting, *_paragraphs(fillers[:1] + mid + fillers[1:], rng), signature(f, rng)] if p]
    body = "\n\n".join(paras)
    quoted = rng.random() < 0.25
    if quoted:
        body += "\n\n" + quoted_reply(f, rng)
    return {"sender": f.sender, "date": format_datetime(f.received), "subject": subject(f, rng, quoted), "body": body}


def _paragraphs(sentences: list[str], rng: random.Random) -> list[str]:
    paras, cur = [], []
    for s in sentences:
        cur.append(s)
        if "\n" in s or rng.random() < 0.35:
            paras.append(" ".join(cur))
            cur = []
    return paras + ([" ".join(cur)] if cur else [])


def webform_body(f: Facts, rng: random.Random) -> str:
    d = f.deliver_by
    fields = [
        ("Name", f.customer or ""),
        ("Email", f.contact or ""),
        ("Product", f.product),
        ("Quantity", str(f.quantity)),
        ("Order number", f.order_id or ""),
        ("Delivery date", _form_date(d, rng) if d else ""),
        ("City", f.city["name"] if f.city else ""),
    ]
    keep_empty = rng.random() < 0.5
    lines = [f"{k}: {v}" for k, v in fields if v or keep_empty]
    cue = rng.choice(HIGH_CUES if f.urgency == "high" else LOW_CUES) if f.urgency != "normal" else ""
    msg = " ".join(x for x in [cue, rng.choice(FILLERS) if rng.random() < 0.5 else ""] if x)
    lines.append(f"Message: {msg}")
    return "A new order request was submitted on northwind-supply.com.\n\n" + "\n".join(lines)


def _form_date(d: date, rng: random.Random) -> str:
    return d.isoformat() if rng.random() < 0.5 else f"{d.day:02d}.{d.month:02d}.{d.year}"


def to_output(f: Facts) -> dict:
    return {
        "customer_name": f.customer,
        "order_id": f.order_id,
        "product": f.product,
        "quantity": f.quantity,
        "deliver_by": f.deliver_by.isoformat() if f.deliver_by else None,
        "city": f.city["name"] if f.city else None,
        "contact_email": f.contact,
        "urgency": f.urgency,
    }


def generate(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[dict]:
    """n distinct examples {"input": {"email": {...}}, "output": {...}}, the same for the same (n, seed)."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        f = draw_facts(rng)
        email = render_email(f, rng)
        key = email["body"] + email["subject"] + email["sender"]
        if key not in seen:
            seen.add(key)
            out.append({"input": {"email": email}, "output": to_output(f)})
    return out


def write(examples: list[dict], path: Path) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:  # mtime=0: byte-reproducible
        for ex in examples:
            gz.write((json.dumps(ex, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=DEFAULT_N)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    examples = generate(args.n, args.seed)
    write(examples, args.out)
    print(f"wrote {len(examples)} examples to {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
